//! Interop shim in front of the Workload API's HTTP/2 server.
//!
//! gRPC C-core clients (py-spiffe, and grpc-java/C++ likewise) send `:authority`
//! = the percent-encoded socket path on unix sockets. The h2 crate under tonic
//! rejects that as a malformed authority and resets the stream (hyperium/h2#487,
//! grpc/grpc#38142), so stock SPIFFE clients would fail. Each connection therefore
//! passes through this shim: in the client-to-server direction the HPACK header
//! blocks are decoded, an invalid `:authority` is replaced by `localhost`, and the
//! block is re-encoded (bounded: see [`super::hpack`]); every other frame, and the whole server-to-client
//! direction, is copied unchanged. The caller's peer credentials are read from the
//! real socket here and handed to tonic as connection info.

use super::attest::{stamp, ProcStamp};
use super::conn::{Limits, Permit, Refusal, Streams, Tracker, Writers, PREFACE_TIMEOUT};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, Interest, ReadBuf};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const DATA: u8 = 0x0;
const RST_STREAM: u8 = 0x3;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Frame size every HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE default).
const MAX_FRAME: usize = 16_384;
/// Largest header block accepted from a client.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Who is on the other end of a Workload API connection (from SO_PEERCRED).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id, when the kernel reports it.
    pub pid: Option<i32>,
    /// The process's start time and executable when the connection was accepted.
    pub stamp: Option<ProcStamp>,
    /// Processes other than `pid` that wrote on the connection (from SCM_CREDENTIALS).
    pub writers: Arc<Writers>,
}

/// The server side of a shimmed connection, carrying the caller's credentials.
#[derive(Debug)]
pub struct ShimStream {
    inner: DuplexStream,
    info: PeerInfo,
}

impl AsyncRead for ShimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ShimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for ShimStream {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

/// Logs refused connections at most once per interval, with how many there were.
struct RefusalLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, uid: u32, why: Refusal) {
        self.suppressed += 1;
        if self.last.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        let reason = match why {
            Refusal::PerUid(n) => format!("uid {uid} already holds {n} connections (max_connections_per_uid)"),
            Refusal::Total(n) => format!("the agent already holds {n} connections (max_connections)"),
        };
        tracing::warn!(refused = self.suppressed, "workload API connection refused: {reason}");
        self.last = Some(Instant::now());
        self.suppressed = 0;
    }
}

/// Accepts connections within `limits` and yields their shimmed server sides.
pub fn incoming(listener: UnixListener, limits: Limits, nofile: Option<u64>) -> tokio_stream::wrappers::ReceiverStream<io::Result<ShimStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let tracker = Tracker::new(limits.effective_max_connections(nofile), limits.max_connections_per_uid);
    tokio::spawn(async move {
        let mut refusals = RefusalLog { last: None, suppressed: 0 };
        loop {
            let conn = match listener.accept().await {
                Ok((c, _)) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "workload API accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(cred) = conn.peer_cred() else {
                tracing::warn!("workload API connection without peer credentials; closed");
                continue;
            };
            let permit = match tracker.admit(cred.uid()) {
                Ok(p) => p,
                Err(why) => {
                    refusals.note(cred.uid(), why);
                    continue;
                }
            };
            // Inherited from the listener (see `bind`); set again in case it was not.
            if let Err(e) = rustix::net::sockopt::set_socket_passcred(&conn, true) {
                tracing::warn!(error = %e, "workload API connection without SO_PASSCRED; closed");
                continue;
            }
            // Two small procfs reads; taken before any byte of the connection is relayed.
            let stamp = cred.pid().and_then(stamp);
            let info = PeerInfo { uid: cred.uid(), gid: cred.gid(), pid: cred.pid(), stamp, writers: Arc::default() };
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(relay(conn, ours, info.clone(), limits.idle_timeout, permit));
            if tx.send(Ok(ShimStream { inner: theirs, info })).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Open streams of a connection and since when it has had none.
struct Activity {
    inner: std::sync::Mutex<(Streams, Option<Instant>)>,
}

impl Activity {
    fn new() -> Self {
        Self { inner: std::sync::Mutex::new((Streams::default(), Some(Instant::now()))) }
    }

    fn update(&self, f: impl FnOnce(&mut Streams)) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g.0);
        g.1 = match (g.0.idle(), g.1) {
            (true, Some(t)) => Some(t),
            (true, None) => Some(Instant::now()),
            (false, _) => None,
        };
    }

    /// When the connection becomes idle for `limit` (None: a stream is open).
    fn idle_deadline(&self, limit: Duration) -> Option<Instant> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).1.map(|t| t + limit)
    }
}

/// Resolves once the connection has had no open stream for `limit`.
async fn idle_timeout(act: &Activity, limit: Duration) {
    loop {
        match act.idle_deadline(limit) {
            Some(d) if d <= Instant::now() => return,
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => tokio::time::sleep(limit.min(Duration::from_secs(5))).await,
        }
    }
}

async fn relay(client: UnixStream, server: DuplexStream, info: PeerInfo, idle: Duration, _permit: Permit) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = tokio::io::split(server);
    let act = Activity::new();
    let up = async {
        let mut reader = CredReader { half: &mut cr, opener: info.pid, writers: &info.writers };
        if let Err(e) = client_to_server(&mut reader, &mut sw, &act).await {
            tracing::debug!(error = %e, "workload API connection closed");
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        if let Err(e) = server_to_client(&mut sr, &mut cw, &act).await {
            tracing::debug!(error = %e, "workload API connection closed");
        }
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = idle_timeout(&act, idle) => tracing::debug!(uid = info.uid, "idle workload API connection closed"),
    }
}

/// Reads the client's bytes with `recvmsg`, noting the process that wrote each
/// chunk (the kernel attaches SCM_CREDENTIALS to every message on a socket with
/// SO_PASSCRED and never merges messages of different writers in one read).
struct CredReader<'a> {
    half: &'a mut OwnedReadHalf,
    opener: Option<i32>,
    writers: &'a Writers,
}

fn recv_with_creds(sock: &UnixStream, out: &mut [u8]) -> io::Result<(usize, Option<i32>)> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = recvmsg(sock, &mut [io::IoSliceMut::new(out)], &mut anc, RecvFlags::CMSG_CLOEXEC)?;
    let pid = anc.drain().find_map(|m| match m {
        RecvAncillaryMessage::ScmCredentials(c) => Some(c.pid.as_raw_nonzero().get()),
        _ => None,
    });
    Ok((r.bytes, pid))
}

impl AsyncRead for CredReader<'_> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let sock: &UnixStream = this.half.as_ref();
        loop {
            std::task::ready!(sock.poll_read_ready(cx))?;
            match sock.try_io(Interest::READABLE, || recv_with_creds(sock, buf.initialize_unfilled())) {
                Ok((n, pid)) => {
                    if let Some(p) = pid {
                        this.writers.wrote(this.opener, p);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Whether `v` is an authority the h2 crate accepts.
pub fn valid_authority(v: &[u8]) -> bool {
    !v.is_empty() && http::uri::Authority::try_from(v).is_ok()
}

/// Replaces an invalid `:authority` in a decoded header list.
pub fn fix_headers(headers: &mut [(Vec<u8>, Vec<u8>)]) {
    for (n, v) in headers.iter_mut() {
        if n.as_slice() == b":authority" && !valid_authority(v) {
            *v = b"localhost".to_vec();
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// Header block payload of a HEADERS frame, without padding and priority fields.
pub fn header_fragment(flags: u8, payload: &[u8]) -> io::Result<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, rest) = p.split_first().ok_or_else(|| bad("padded frame without pad length"))?;
        pad = usize::from(n);
        p = rest;
    }
    if flags & PRIORITY != 0 {
        p = p.get(5..).ok_or_else(|| bad("short priority fields"))?;
    }
    p.get(..p.len().checked_sub(pad).ok_or_else(|| bad("padding longer than frame"))?).ok_or_else(|| bad("bad padding"))
}

fn frame_header(len: usize, typ: u8, flags: u8, stream: u32) -> [u8; 9] {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    [l[1], l[2], l[3], typ, flags, s[0], s[1], s[2], s[3]]
}

/// Encodes a header block as HEADERS (+ CONTINUATION) frames.
pub fn header_frames(stream: u32, end_stream: bool, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len() + 32);
    let chunks: Vec<&[u8]> = if block.is_empty() { vec![&[][..]] } else { block.chunks(MAX_FRAME).collect() };
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        let typ = if i == 0 { HEADERS } else { CONTINUATION };
        let mut flags = if i == last { END_HEADERS } else { 0 };
        if i == 0 && end_stream {
            flags |= END_STREAM;
        }
        out.extend_from_slice(&frame_header(c.len(), typ, flags, stream));
        out.extend_from_slice(c);
    }
    out
}

async fn client_to_server<R, W>(r: &mut R, w: &mut W, act: &Activity) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    tokio::time::timeout(PREFACE_TIMEOUT, r.read_exact(&mut preface)).await.map_err(|_| bad("no HTTP/2 preface in time"))??;
    if &preface != PREFACE {
        return Err(bad("not an HTTP/2 connection"));
    }
    w.write_all(&preface).await?;
    let mut decoder = super::hpack::Decoder::default();
    // (stream, end_stream, block) of a header block awaiting CONTINUATION frames.
    let mut pending: Option<(u32, bool, Vec<u8>)> = None;
    while let Some(Head { raw, len, typ, flags, stream }) = read_head(r).await? {
        if len > MAX_HEADER_BLOCK.max(MAX_FRAME) {
            return Err(bad("frame too large"));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        let block = match (typ, pending.take()) {
            (HEADERS, None) => Some((stream, flags & END_STREAM != 0, header_fragment(flags, &payload)?.to_vec())),
            (CONTINUATION, Some((s, end, mut block))) if s == stream => {
                block.extend_from_slice(&payload);
                if block.len() > MAX_HEADER_BLOCK {
                    return Err(bad("header block too large"));
                }
                Some((s, end, block))
            }
            (_, Some(_)) | (CONTINUATION, None) => return Err(bad("header block interrupted")),
            (_, None) => {
                if typ == RST_STREAM {
                    act.update(|s| s.ended(stream));
                }
                w.write_all(&raw).await?;
                w.write_all(&payload).await?;
                None
            }
        };
        // A block without END_HEADERS waits for its CONTINUATION frames.
        let done = match block {
            Some(b) if flags & END_HEADERS == 0 => {
                pending = Some(b);
                None
            }
            b => b,
        };
        if let Some((s, end, block)) = done {
            let mut headers = decoder.decode(&block).map_err(|e| bad(&e.to_string()))?;
            fix_headers(&mut headers);
            act.update(|st| st.client_headers(s));
            let encoded = super::hpack::encode(&headers);
            w.write_all(&header_frames(s, end, &encoded)).await?;
        }
        w.flush().await?;
    }
    Ok(())
}

/// Copies the server's frames to the client unchanged, noting the streams it ends.
async fn server_to_client<R, W>(r: &mut R, w: &mut W, act: &Activity) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while let Some(Head { raw, len, typ, flags, stream }) = read_head(r).await? {
        w.write_all(&raw).await?;
        let len = len as u64;
        let copied = tokio::io::copy(&mut (&mut *r).take(len), w).await?;
        if copied != len {
            return Err(bad("server frame cut short"));
        }
        if ((typ == HEADERS || typ == DATA) && flags & END_STREAM != 0) || typ == RST_STREAM {
            act.update(|s| s.ended(stream));
        }
        w.flush().await?;
    }
    Ok(())
}

/// A frame's 9-byte header as read, and its fields.
struct Head {
    raw: [u8; 9],
    len: usize,
    typ: u8,
    flags: u8,
    stream: u32,
}

/// Reads the next frame header; `None` when the peer closed the connection
/// (also in the middle of a header).
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<Option<Head>> {
    let mut raw = [0u8; 9];
    match r.read_exact(&mut raw).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(raw[0]) << 16 | usize::from(raw[1]) << 8 | usize::from(raw[2]);
    let stream = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & 0x7fff_ffff;
    Ok(Some(Head { raw, len, typ: raw[3], flags: raw[4], stream }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoded_socket_path_is_replaced_and_valid_authority_kept() {
        let mut h = vec![(b":authority".to_vec(), b"tmp%2Fx%2Fagent.sock".to_vec()), (b":path".to_vec(), b"/x".to_vec())];
        fix_headers(&mut h);
        assert_eq!(h[0].1, b"localhost");
        let mut ok = vec![(b":authority".to_vec(), b"example.org:443".to_vec())];
        fix_headers(&mut ok);
        assert_eq!(ok[0].1, b"example.org:443");
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        // pad length 2, priority (5 bytes), block "ab", padding "xx".
        let payload = [2u8, 0, 0, 0, 0, 16, b'a', b'b', b'x', b'x'];
        assert_eq!(header_fragment(PADDED | PRIORITY, &payload).unwrap(), b"ab");
        assert!(header_fragment(PADDED, &[9u8, 1]).is_err());
    }

    #[test]
    fn large_blocks_are_split_into_continuations() {
        let block = vec![7u8; MAX_FRAME + 10];
        let out = header_frames(3, true, &block);
        assert_eq!(out[3], HEADERS);
        assert_eq!(out[4], END_STREAM);
        let second = 9 + MAX_FRAME;
        assert_eq!(out[second + 3], CONTINUATION);
        assert_eq!(out[second + 4], END_HEADERS);
        assert_eq!(out.len(), block.len() + 18);
    }

    #[tokio::test]
    async fn header_block_round_trips_through_the_shim() {
        let hdrs = [(&b":method"[..], &b"POST"[..]), (b":authority", b"%2Frun%2Fs.sock"), (b"workload.spiffe.io", b"true")];
        let block = super::super::hpack::encode(&hdrs.map(|(n, v)| (n.to_vec(), v.to_vec())));
        let mut input = PREFACE.to_vec();
        input.extend(header_frames(1, false, &block));
        input.extend(frame_header(3, 0x0, END_STREAM, 1));
        input.extend(b"abc");
        let mut out = Vec::new();
        let act = Activity::new();
        client_to_server(&mut input.as_slice(), &mut out, &act).await.unwrap();
        assert!(act.idle_deadline(Duration::from_secs(1)).is_none(), "stream 1 is open");
        assert_eq!(&out[..24], PREFACE);
        let len = usize::from(out[24]) << 16 | usize::from(out[25]) << 8 | usize::from(out[26]);
        let decoded = super::super::hpack::Decoder::default().decode(&out[33..33 + len]).unwrap();
        assert!(decoded.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert!(decoded.contains(&(b"workload.spiffe.io".to_vec(), b"true".to_vec())));
        assert_eq!(&out[out.len() - 3..], b"abc", "data frames pass unchanged");
    }
}
