//! The services go-plugin hosts expect beside the provider: controller
//! (graceful shutdown), stdio (we mirror nothing: our stderr already reaches
//! the host) and broker (we open no extra servers, so knocks are refused).

use futures::Stream;
use sigil_schemas::go_plugin::{
    conn_info::Knock, grpc_broker_server::GrpcBroker, grpc_controller_server::GrpcController,
    grpc_stdio_server::GrpcStdio, ConnInfo, Empty, StdioData,
};
use std::pin::Pin;
use tokio::sync::watch;
use futures::future::ready;
use futures::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

/// Shared shutdown flag: flipped once by `Shutdown` (or the host going away).
#[derive(Clone, Debug)]
pub struct ShutdownSignal {
    tx: watch::Sender<bool>,
}

impl Default for ShutdownSignal {
    fn default() -> Self {
        Self::new()
    }
}

impl ShutdownSignal {
    /// A signal not yet raised.
    pub fn new() -> Self {
        Self { tx: watch::channel(false).0 }
    }

    /// Raises the signal.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Resolves once the signal is raised.
    pub async fn raised(&self) {
        let mut rx = self.tx.subscribe();
        // Err means the sender is gone, which cannot happen while self lives.
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// `plugin.GRPCController`.
#[derive(Debug)]
pub struct Controller {
    /// Raised by `Shutdown`.
    pub shutdown: ShutdownSignal,
}

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        tracing::debug!("host requested shutdown");
        self.shutdown.trigger();
        Ok(Response::new(Empty {}))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// `plugin.GRPCStdio`: an empty stream that ends at shutdown, so graceful
/// shutdown is not held up by it.
#[derive(Debug)]
pub struct Stdio {
    /// Ends the stream.
    pub shutdown: ShutdownSignal,
}

#[tonic::async_trait]
impl GrpcStdio for Stdio {
    type StreamStdioStream = BoxStream<StdioData>;

    async fn stream_stdio(&self, _: Request<Empty>) -> Result<Response<Self::StreamStdioStream>, Status> {
        let shutdown = self.shutdown.clone();
        let stream = futures::stream::once(async move {
            shutdown.raised().await;
        })
        .filter_map(|()| ready(None::<Result<StdioData, Status>>));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `plugin.GRPCBroker`: refuses every knock with an explanation.
#[derive(Debug)]
pub struct Broker {
    /// Ends the stream.
    pub shutdown: ShutdownSignal,
}

fn refuse(info: ConnInfo) -> Option<Result<ConnInfo, Status>> {
    let knock = info.knock?;
    if !knock.knock {
        return None;
    }
    Some(Ok(ConnInfo {
        service_id: info.service_id,
        network: String::new(),
        address: String::new(),
        knock: Some(Knock {
            knock: false,
            ack: false,
            error: "terraform-provider-sigil does not serve brokered connections".into(),
        }),
    }))
}

#[tonic::async_trait]
impl GrpcBroker for Broker {
    type StartStreamStream = BoxStream<ConnInfo>;

    async fn start_stream(
        &self,
        request: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let shutdown = self.shutdown.clone();
        let inbound = request.into_inner();
        let replies = inbound
            .take_while(|item| ready(item.is_ok()))
            .filter_map(|item| ready(item.ok().and_then(refuse)))
            .take_until(Box::pin(async move { shutdown.raised().await }));
        Ok(Response::new(Box::pin(replies)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knocks_are_answered_with_an_error_and_acks_ignored() {
        let knock = ConnInfo {
            service_id: 3,
            knock: Some(Knock { knock: true, ack: false, error: String::new() }),
            ..Default::default()
        };
        let reply = refuse(knock).unwrap().unwrap();
        assert_eq!(reply.service_id, 3);
        assert!(!reply.knock.unwrap().error.is_empty());
        assert!(refuse(ConnInfo::default()).is_none());
    }

    #[tokio::test]
    async fn shutdown_signal_wakes_waiters() {
        let s = ShutdownSignal::new();
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.raised().await }
        });
        s.trigger();
        waiter.await.unwrap();
    }
}
