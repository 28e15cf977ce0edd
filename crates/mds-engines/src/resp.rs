//! A minimal RESP2 client: enough to log in, PING, manage ACL users and take
//! snapshots. Tenants talk to Redis with their own clients; mds only checks,
//! sets up and backs up.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// `Err` with the server's message for an error reply.
    pub fn ok(self) -> Result<Reply, String> {
        match self {
            Reply::Error(e) => Err(e),
            other => Ok(other),
        }
    }
}

pub struct Resp {
    stream: BufReader<TcpStream>,
}

impl Resp {
    pub async fn connect(host: &str, port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect((host, port)).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// Connects and logs in as `user`.
    pub async fn login(host: &str, port: u16, user: &str, password: &str) -> Result<Self, String> {
        let mut conn = Self::connect(host, port)
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        conn.call(&["AUTH", user, password])
            .await
            .map_err(|e| e.to_string())?
            .ok()?;
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&str]) -> std::io::Result<Reply> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call_bytes(&args).await
    }

    /// [`Resp::call`] with byte arguments: keys need not be UTF-8.
    pub async fn call_bytes(&mut self, args: &[&[u8]]) -> std::io::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await?;
        self.read().await
    }

    /// The server's `INFO` text, all of it or one section.
    pub async fn info(&mut self, section: Option<&str>) -> Result<String, String> {
        let reply = match section {
            Some(section) => self.call(&["INFO", section]).await,
            None => self.call(&["INFO"]).await,
        };
        match reply.map_err(|e| e.to_string())?.ok()? {
            Reply::Bulk(Some(text)) => Ok(String::from_utf8_lossy(&text).into_owned()),
            other => Err(format!("unexpected INFO reply {other:?}")),
        }
    }

    fn read(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Reply>> + Send + '_>>
    {
        Box::pin(async move {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim_end_matches("\r\n");
            let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad RESP reply");
            let (kind, rest) = line.split_at(line.len().min(1));
            Ok(match kind {
                "+" => Reply::Simple(rest.to_string()),
                "-" => Reply::Error(rest.to_string()),
                ":" => Reply::Integer(rest.parse().map_err(|_| bad())?),
                "$" => {
                    let len: i64 = rest.parse().map_err(|_| bad())?;
                    if len < 0 {
                        Reply::Bulk(None)
                    } else {
                        let mut buf = vec![0u8; len as usize + 2];
                        self.stream.read_exact(&mut buf).await?;
                        buf.truncate(len as usize);
                        Reply::Bulk(Some(buf))
                    }
                }
                "*" => {
                    let len: i64 = rest.parse().map_err(|_| bad())?;
                    if len < 0 {
                        Reply::Array(None)
                    } else {
                        let mut items = Vec::with_capacity(len as usize);
                        for _ in 0..len {
                            items.push(self.read().await?);
                        }
                        Reply::Array(Some(items))
                    }
                }
                _ => return Err(bad()),
            })
        })
    }
}

/// Logs in as `user` and expects PONG: the readiness check of a binding.
pub async fn auth_ping(host: &str, port: u16, user: &str, password: &str) -> Result<(), String> {
    let mut conn = Resp::login(host, port, user, password).await?;
    match conn.call(&["PING"]).await.map_err(|e| e.to_string())? {
        Reply::Simple(pong) if pong == "PONG" => Ok(()),
        other => Err(format!("unexpected PING reply {other:?}")),
    }
}

/// Logs in as `user` and returns its server's `INFO` text.
pub async fn auth_info(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
) -> Result<String, String> {
    Resp::login(host, port, user, password)
        .await?
        .info(None)
        .await
}

/// One `field:value` line of an `INFO` text.
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim_end()
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}
