//! The console adapter behind `opsbot chat`: one command per input line, replies on the
//! output. It runs through the same router, store and limiter as any platform; identities
//! are `console:NAME`. Non-UTF-8 lines and over-long lines are answered, never fatal.

use std::sync::Arc;

use chrono::Utc;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::domain::{ChannelRef, EventPayload, InboundEvent, Platform, UserRef};
use crate::router::Router;

/// Longest line read into memory; anything longer is skipped to its end and refused.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

pub struct Console {
    router: Arc<Router>,
    user: UserRef,
    channel: ChannelRef,
}

impl Console {
    pub fn new(router: Arc<Router>, name: &str, channel: &str) -> Self {
        Self {
            router,
            user: UserRef::new(Platform::Console, name),
            channel: ChannelRef {
                id: channel.to_owned(),
                name: channel.to_owned(),
            },
        }
    }

    /// Reads lines until end of input, answering each in order.
    pub async fn run<R, W>(&self, mut input: R, mut output: W) -> std::io::Result<()>
    where
        R: AsyncBufRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut input)
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)
                .await?;
            if n == 0 {
                return Ok(());
            }
            let payload = if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
                skip_rest_of_line(&mut input).await?;
                // Longer than any command may be; the parser refuses it with a clear message.
                EventPayload::Command(format!("/{}", "x".repeat(MAX_LINE_BYTES)))
            } else {
                match std::str::from_utf8(&line) {
                    Ok(text) => {
                        EventPayload::Command(text.trim_end_matches(['\n', '\r']).to_owned())
                    }
                    Err(_) => EventPayload::Undecodable {
                        byte_len: line.len(),
                    },
                }
            };
            if matches!(&payload, EventPayload::Command(t) if t.trim().is_empty()) {
                continue;
            }
            let response = self.router.handle(&self.event(payload)).await;
            if let Some(reply) = response.reply {
                output.write_all(reply.text.as_bytes()).await?;
                output.write_all(b"\n").await?;
                output.flush().await?;
            }
        }
    }

    fn event(&self, payload: EventPayload) -> InboundEvent {
        InboundEvent {
            platform: Platform::Console,
            workspace: None,
            channel: self.channel.clone(),
            thread: None,
            user: self.user.clone(),
            display_name: self.user.user_id.clone(),
            payload,
            event_id: None,
            reply_handle: None,
            received_at: Utc::now(),
        }
    }
}

async fn skip_rest_of_line<R: AsyncBufRead + Unpin>(input: &mut R) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf().await?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            input.consume(nl + 1);
            return Ok(());
        }
        let len = buf.len();
        input.consume(len);
    }
}
