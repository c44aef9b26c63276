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

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Frame size every HTTP/2 peer must accept (SETTINGS_MAX_FRAME_SIZE default).
const MAX_FRAME: usize = 16_384;
/// Largest header block accepted from a client.
const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// Who is on the other end of a Workload API connection (from SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerInfo {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id, when the kernel reports it.
    pub pid: Option<i32>,
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
        self.info
    }
}

/// Accepts connections and yields their shimmed server sides.
pub fn incoming(listener: UnixListener) -> tokio_stream::wrappers::ReceiverStream<io::Result<ShimStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let conn = match listener.accept().await {
                Ok((c, _)) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "workload API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(cred) = conn.peer_cred() else {
                tracing::warn!("workload API connection without peer credentials; closed");
                continue;
            };
            let info = PeerInfo { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() };
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(relay(conn, ours));
            if tx.send(Ok(ShimStream { inner: theirs, info })).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn relay(client: UnixStream, server: DuplexStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = tokio::io::split(server);
    let up = async {
        if let Err(e) = client_to_server(&mut cr, &mut sw).await {
            tracing::debug!(error = %e, "workload API connection closed");
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
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

async fn client_to_server<R, W>(r: &mut R, w: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    r.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(bad("not an HTTP/2 connection"));
    }
    w.write_all(&preface).await?;
    let mut decoder = super::hpack::Decoder::default();
    // (stream, end_stream, block) of a header block awaiting CONTINUATION frames.
    let mut pending: Option<(u32, bool, Vec<u8>)> = None;
    loop {
        let mut h = [0u8; 9];
        match r.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let (typ, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        if len > MAX_HEADER_BLOCK.max(MAX_FRAME) {
            return Err(bad("frame too large"));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        let done = match (typ, pending.take()) {
            (HEADERS, None) => {
                let block = header_fragment(flags, &payload)?.to_vec();
                if flags & END_HEADERS != 0 {
                    Some((stream, flags & END_STREAM != 0, block))
                } else {
                    pending = Some((stream, flags & END_STREAM != 0, block));
                    None
                }
            }
            (CONTINUATION, Some((s, end, mut block))) if s == stream => {
                block.extend_from_slice(&payload);
                if block.len() > MAX_HEADER_BLOCK {
                    return Err(bad("header block too large"));
                }
                if flags & END_HEADERS != 0 {
                    Some((s, end, block))
                } else {
                    pending = Some((s, end, block));
                    None
                }
            }
            (_, Some(_)) | (CONTINUATION, None) => return Err(bad("header block interrupted")),
            (_, None) => {
                w.write_all(&h).await?;
                w.write_all(&payload).await?;
                None
            }
        };
        if let Some((s, end, block)) = done {
            let mut headers = decoder.decode(&block).map_err(|e| bad(&e.to_string()))?;
            fix_headers(&mut headers);
            let encoded = super::hpack::encode(&headers);
            w.write_all(&header_frames(s, end, &encoded)).await?;
        }
        w.flush().await?;
    }
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
        client_to_server(&mut input.as_slice(), &mut out).await.unwrap();
        assert_eq!(&out[..24], PREFACE);
        let len = usize::from(out[24]) << 16 | usize::from(out[25]) << 8 | usize::from(out[26]);
        let decoded = super::super::hpack::Decoder::default().decode(&out[33..33 + len]).unwrap();
        assert!(decoded.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
        assert!(decoded.contains(&(b"workload.spiffe.io".to_vec(), b"true".to_vec())));
        assert_eq!(&out[out.len() - 3..], b"abc", "data frames pass unchanged");
    }
}
