//! Pieces of a runtime instance that do not depend on the control plane:
//! its log (the last lines of its output), a port for it to listen on, and
//! the HTTP health probe. The instance itself is a jailed process started
//! with [`crate::sandbox::Sandboxes::spawn`] over a workspace holding its
//! unpacked release; `mds-server` supervises it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lines of output kept per instance, at most.
pub const LOG_LINES: usize = 2000;
/// Bytes of output kept per instance, at most: a noisy app costs mds
/// this much memory and no more.
pub const LOG_BYTES: usize = 1 << 20;
/// A longer line is cut here.
pub const LOG_LINE_BYTES: usize = 4 << 10;

/// The last lines of an instance's output (stdout and stderr interleaved
/// as they came), and mds's own notes about it, within [`LOG_LINES`] and
/// [`LOG_BYTES`].
#[derive(Debug, Default)]
pub struct LogRing(Mutex<(VecDeque<String>, usize)>);

impl LogRing {
    pub fn push(&self, mut line: String) {
        if line.len() > LOG_LINE_BYTES {
            let mut cut = LOG_LINE_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" [cut]");
        }
        let mut guard = self.0.lock().expect("never poisoned");
        let (lines, bytes) = &mut *guard;
        *bytes += line.len();
        lines.push_back(line);
        while lines.len() > LOG_LINES || *bytes > LOG_BYTES {
            match lines.pop_front() {
                Some(old) => *bytes -= old.len(),
                None => break,
            }
        }
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let guard = self.0.lock().expect("never poisoned");
        let lines = &guard.0;
        lines
            .iter()
            .skip(lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// A loopback port nothing listens on now, for an instance's `PORT`.
/// (Another process could take it before the instance binds it; the
/// instance then fails its health check and is restarted on a new one.)
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// `GET path` on the connection `connect` opens to `127.0.0.1:port` (in
/// the instance's network): whether it answers 2xx within `timeout`. A
/// plain HTTP/1.1 exchange, so it needs no client stack and speaks to any
/// server.
pub async fn probe(
    connect: impl std::future::Future<Output = std::io::Result<TcpStream>>,
    port: u16,
    path: &str,
    timeout: Duration,
) -> bool {
    tokio::time::timeout(timeout, async {
        let mut stream = connect.await.ok()?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: mds-health\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        // Read the rest (up to 64 KiB) so the app's write is not cut off
        // by a reset.
        let mut rest = Vec::new();
        let _ = (&mut stream).take(64 << 10).read_to_end(&mut rest).await;
        // "HTTP/1.x 2xx"
        Some(head.starts_with(b"HTTP/1.") && head[9] == b'2')
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_lines() {
        let ring = LogRing::default();
        for i in 0..LOG_LINES + 5 {
            ring.push(i.to_string());
        }
        assert_eq!(
            ring.tail(2),
            vec![(LOG_LINES + 3).to_string(), (LOG_LINES + 4).to_string()]
        );
        assert_eq!(ring.tail(usize::MAX).len(), LOG_LINES);
        // Long lines are cut, and the ring keeps to its bytes.
        for _ in 0..1000 {
            ring.push("x".repeat(70_000));
        }
        let kept = ring.tail(usize::MAX);
        assert!(kept.iter().all(|l| l.len() <= LOG_LINE_BYTES + 6));
        assert!(kept.iter().map(String::len).sum::<usize>() <= LOG_BYTES);
    }

    #[tokio::test]
    async fn probe_wants_a_2xx() {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let connect = |port: u16| TcpStream::connect(("127.0.0.1", port));
        let timeout = Duration::from_secs(2);
        assert!(probe(connect(port), port, "/health", timeout).await);
        assert!(!probe(connect(port), port, "/health", timeout).await);
        let free = free_port().unwrap();
        assert!(!probe(connect(free), free, "/", timeout).await);
    }
}
