//! A prompt's size in tokens, cut to the context window the way Ollama cuts it.
//!
//! Two steps, as in Ollama:
//! 1. `/api/chat` (and `/api/generate`, which builds a chat of an optional system
//!    message and the prompt) drops the oldest messages until the rendered prompt fits
//!    `num_ctx`, always keeping the system messages and the last message
//!    (server/prompt.go `chatPrompt`).
//! 2. The runner cuts a prompt still longer than `num_ctx - 1` tokens: it keeps the
//!    first `num_keep` tokens and drops from the middle until about half the context
//!    is free for the answer (llm/llama_server.go `completionPromptForRequest` and
//!    `contextShiftPromptLimit`). With context shift off (`"shift": false`) it refuses
//!    instead, with a 400.
//!
//! With `"truncate": false` neither step cuts. Token counts are the simulator's own
//! (see [`message_tokens`]), not a real tokenizer's.

use crate::text;

/// Ollama's answer when a prompt does not fit and context shift is off
/// (llm/llama_server.go `completionPromptForRequest`).
pub const TOO_LONG: &str = "the prompt is longer than the context length currently available to the model; shorten the prompt, adjust the context length in settings, or use a model with a longer context length";

/// Ollama's default `num_keep` (api/types.go `DefaultOptions`).
pub const DEFAULT_NUM_KEEP: i64 = 4;

/// The context a prompt must fit, from the model and the request's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// The context length in tokens.
    pub num_ctx: usize,
    /// Tokens at the start of the prompt the runner never drops; negative keeps all.
    pub num_keep: i64,
    /// `truncate` (default true): whether to cut at all.
    pub truncate: bool,
    /// `shift` (default true): whether the runner may cut, or must refuse.
    pub shift: bool,
}

/// The prompt does not fit and the runner may not cut it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong;

/// The tokens a message costs in a rendered chat prompt: its words plus four for
/// the template's role markers.
pub fn message_tokens(content: &str) -> usize {
    text::count_tokens(content) + 4
}

/// The prompt tokens evaluated for a chat whose messages (role, tokens) are given in
/// order: older messages dropped first, then the runner's cut.
pub fn chat_prompt_tokens(messages: &[(&str, usize)], window: Window) -> Result<usize, TooLong> {
    let Some(last) = messages.len().checked_sub(1) else {
        return Ok(0);
    };
    let kept_from = |first: usize| -> usize {
        let systems: usize = messages[..first]
            .iter()
            .filter(|(role, _)| *role == "system")
            .map(|(_, tokens)| tokens)
            .sum();
        systems + messages[first..].iter().map(|(_, t)| t).sum::<usize>()
    };
    let mut first = 0;
    if window.truncate {
        while first < last && kept_from(first) > window.num_ctx {
            first += 1;
        }
    }
    runner_prompt_tokens(kept_from(first), window)
}

/// The prompt tokens the runner evaluates for a rendered prompt of `tokens`.
pub fn runner_prompt_tokens(tokens: usize, window: Window) -> Result<usize, TooLong> {
    let num_ctx = window.num_ctx;
    if !window.truncate || num_ctx <= 1 || tokens < num_ctx {
        return Ok(tokens);
    }
    if !window.shift {
        return Err(TooLong);
    }
    let keep = if window.num_keep < 0 {
        tokens
    } else {
        window.num_keep as usize
    };
    let keep = keep.min(num_ctx - 1);
    Ok(num_ctx - ((num_ctx - keep) / 2).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Window = Window {
        num_ctx: 100,
        num_keep: 4,
        truncate: true,
        shift: true,
    };

    #[test]
    fn a_long_prompt_is_cut_to_about_half_the_context() {
        assert_eq!(runner_prompt_tokens(99, WINDOW), Ok(99));
        assert_eq!(runner_prompt_tokens(100, WINDOW), Ok(52));
        assert_eq!(runner_prompt_tokens(6000, WINDOW), Ok(52));
        let no_shift = Window {
            shift: false,
            ..WINDOW
        };
        assert_eq!(runner_prompt_tokens(6000, no_shift), Err(TooLong));
        let no_truncate = Window {
            truncate: false,
            ..WINDOW
        };
        assert_eq!(runner_prompt_tokens(6000, no_truncate), Ok(6000));
    }

    #[test]
    fn old_messages_go_first_but_system_and_last_stay() {
        let messages = [
            ("system", 10),
            ("user", 50),
            ("assistant", 30),
            ("user", 40),
        ];
        assert_eq!(chat_prompt_tokens(&messages, WINDOW), Ok(80));
        let huge_last = [("system", 10), ("user", 50), ("user", 200)];
        assert_eq!(
            chat_prompt_tokens(&huge_last, WINDOW),
            Ok(52),
            "the last message alone is cut by the runner"
        );
        let fits = [("user", 30), ("user", 30)];
        assert_eq!(chat_prompt_tokens(&fits, WINDOW), Ok(60));
    }
}
