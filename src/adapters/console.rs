//! The console adapter behind `opsbot chat`: one command per input line, replies on the
//! output. It runs through the same router, store and limiter as any platform; identities
//! are `console:NAME`. Non-UTF-8 lines and over-long lines are answered, never fatal.
//!
//! Console-only lines make whole flows scriptable: `:as NAME` switches identity,
//! `:react EMOJI ID` / `:unreact EMOJI ID` add or remove a reaction on message `ID` (an
//! approval request's message id is its request number).

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::inbound::{Answer, Inbound};
use crate::domain::{ChannelRef, EventPayload, InboundEvent, Platform, RunId, UserRef};
use crate::ports::{OutboundError, OutboundMessage, OutboundTarget, Sent};

/// Longest line read into memory; anything longer is skipped to its end and refused.
pub const MAX_LINE_BYTES: usize = 16 * 1024;

pub struct Console {
    inbound: Inbound,
    user: UserRef,
    channel: ChannelRef,
}

impl Console {
    pub fn new(inbound: Inbound, name: &str, channel: &str) -> Self {
        Self {
            inbound,
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
        W: AsyncWrite + Unpin + Send,
    {
        let mut line = Vec::new();
        let mut user = self.user.clone();
        while let Some(payload) = read_payload(&mut input, &mut line).await? {
            let payload = match payload {
                EventPayload::Command(t) if t.trim().is_empty() => continue,
                EventPayload::Command(t) if t.trim_start().starts_with(':') => {
                    match console_line(t.trim()) {
                        ConsoleLine::As(name) => {
                            user = UserRef::new(Platform::Console, name);
                            write_line(&mut output, &format!("(now acting as {user})")).await?;
                            continue;
                        }
                        ConsoleLine::Reaction(p) => p,
                        ConsoleLine::Unknown(why) => {
                            write_line(&mut output, &why).await?;
                            continue;
                        }
                    }
                }
                other => other,
            };
            // Shutdown waits for the command being answered, not for the next line.
            let _answering = self.inbound.answering();
            let ev = InboundEvent::new(user.clone(), self.channel.clone(), payload);
            let answer = OnOutput::new(&mut output);
            self.inbound.answer(&ev, &answer).await;
            answer.result()?;
        }
        Ok(())
    }
}

/// Reads one line into `line` and makes it an event payload; `None` at end of input.
async fn read_payload<R: AsyncBufRead + Unpin>(
    input: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<EventPayload>> {
    line.clear();
    let n = input
        .take(MAX_LINE_BYTES as u64 + 1)
        .read_until(b'\n', line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
        skip_rest_of_line(input).await?;
        // Longer than any command may be; the parser refuses it with a clear message.
        return Ok(Some(EventPayload::Command(format!(
            "/{}",
            "x".repeat(MAX_LINE_BYTES)
        ))));
    }
    Ok(Some(match std::str::from_utf8(line) {
        Ok(text) => EventPayload::Command(text.trim_end_matches(['\n', '\r']).to_owned()),
        Err(_) => EventPayload::Undecodable {
            byte_len: line.len(),
        },
    }))
}

/// The console's [`Answer`]: the reply on its own line of the output. The message id of an
/// approval request is its request number (what `:react EMOJI ID` names).
struct OnOutput<'a, W> {
    output: tokio::sync::Mutex<&'a mut W>,
    /// The first write that failed: it ends the console, as the output is gone.
    failed: std::sync::Mutex<Option<std::io::Error>>,
}

impl<'a, W> OnOutput<'a, W> {
    fn new(output: &'a mut W) -> Self {
        Self {
            output: tokio::sync::Mutex::new(output),
            failed: std::sync::Mutex::new(None),
        }
    }

    fn result(self) -> std::io::Result<()> {
        match self.failed.into_inner().expect("failed poisoned") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl<W: AsyncWrite + Unpin + Send> Answer for OnOutput<'_, W> {
    async fn deliver(
        &self,
        _ev: &InboundEvent,
        message: &OutboundMessage,
        approval: Option<RunId>,
    ) -> Result<Option<String>, OutboundError> {
        let mut output = self.output.lock().await;
        if let Err(e) = write_line(&mut *output, &message.text).await {
            let failed = OutboundError::Failed(e.to_string());
            self.failed
                .lock()
                .expect("failed poisoned")
                .get_or_insert(e);
            return Err(failed);
        }
        // The console's message id for an approval request is its request number.
        Ok(approval.map(|run| run.to_string()))
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

async fn write_line<W: AsyncWrite + Unpin>(output: &mut W, text: &str) -> std::io::Result<()> {
    output.write_all(text.as_bytes()).await?;
    output.write_all(b"\n").await?;
    output.flush().await
}

enum ConsoleLine {
    As(String),
    Reaction(EventPayload),
    Unknown(String),
}

fn console_line(line: &str) -> ConsoleLine {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [":as", name] => ConsoleLine::As((*name).to_owned()),
        [verb @ (":react" | ":unreact"), emoji, message_id] => ConsoleLine::Reaction(EventPayload::Reaction {
            emoji: (*emoji).to_owned(),
            message_id: message_id.trim_start_matches('#').to_owned(),
            added: *verb == ":react",
        }),
        _ => ConsoleLine::Unknown(
            "console lines: `:as NAME`, `:react EMOJI MESSAGE_ID`, `:unreact EMOJI MESSAGE_ID`; commands start with /".into(),
        ),
    }
}

/// Outbound messages for the console platform: written to stdout with the channel and the
/// message id, so alert groups (and their edits) show up in `opsbot chat` and `serve`.
pub struct ConsoleOutbound {
    next_id: std::sync::atomic::AtomicU64,
}

impl Default for ConsoleOutbound {
    fn default() -> Self {
        Self {
            next_id: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

#[async_trait::async_trait]
impl crate::ports::ChatOutbound for ConsoleOutbound {
    async fn send(&self, to: &OutboundTarget, message: &OutboundMessage) -> Sent {
        let text = &message.text;
        if to.platform != Platform::Console {
            return Err(OutboundError::Undeliverable(format!(
                "no {} adapter is configured",
                to.platform
            )));
        }
        let id = format!(
            "a{}",
            self.next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut out = tokio::io::stdout();
        let line = format!("[#{} message {id}] {text}\n", to.channel_id);
        out.write_all(line.as_bytes())
            .await
            .map_err(|e| OutboundError::Failed(e.to_string()))?;
        out.flush()
            .await
            .map_err(|e| OutboundError::Failed(e.to_string()))?;
        Ok(id)
    }

    async fn edit(&self, to: &OutboundTarget, id: &str, message: &OutboundMessage) -> Sent<()> {
        let mut out = tokio::io::stdout();
        let line = format!(
            "[#{} message {id}, edited] {}\n",
            to.channel_id, message.text
        );
        out.write_all(line.as_bytes())
            .await
            .map_err(|e| OutboundError::Failed(e.to_string()))?;
        out.flush()
            .await
            .map_err(|e| OutboundError::Failed(e.to_string()))
    }
}
