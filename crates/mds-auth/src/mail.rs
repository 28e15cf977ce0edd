//! Mail delivery for confirmation and recovery messages: SMTP when
//! configured (`--smtp-url`), otherwise nothing leaves the server and
//! non-production environments keep the messages in their sink.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Clone)]
pub struct Mailer {
    smtp: Option<(AsyncSmtpTransport<Tokio1Executor>, Mailbox)>,
}

impl Mailer {
    /// No SMTP: messages are only captured.
    pub fn sink() -> Self {
        Self { smtp: None }
    }

    /// `smtp://user:pass@host:port` (STARTTLS with `?tls=required`, or
    /// `smtps://` for implicit TLS), sending as `from`.
    pub fn smtp(url: &str, from: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("--smtp-url: {e}"))?
            .build();
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("--smtp-from {from:?}: {e}"))?;
        Ok(Self {
            smtp: Some((transport, from)),
        })
    }

    pub fn delivers(&self) -> bool {
        self.smtp.is_some()
    }

    /// Sends one plain-text message. Without SMTP, does nothing.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let Some((transport, from)) = &self.smtp else {
            return Ok(());
        };
        let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            .body(body.to_string())
            .map_err(|e| e.to_string())?;
        transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}
