//! Splitting long replies at Slack's limits without mangling them: cut at a
//! paragraph break, else a line break, else a space, and avoid cutting inside
//! a ``` code fence; when a fence must be cut, close it at the end of one
//! message and reopen it (same info string) at the start of the next.
//!
//! Lengths are UTF-8 bytes. Slack counts characters, and a character is at
//! least one byte, so a byte limit is never over Slack's character limit.

/// Most text one `chat.postMessage`/`chat.update` should carry: Slack
/// truncates past 40,000 characters and advises 4,000 for readability.
pub const MAX_TEXT_MESSAGE: usize = 4_000;
/// Most markdown one streamed message (start/append/stop) carries; Slack's
/// `markdown_text` limit per call is 12,000 characters.
pub const MAX_STREAM_MESSAGE: usize = 12_000;

const FENCE: &str = "```";
/// Appended to a message whose code fence was cut.
pub const FENCE_CLOSE: &str = "\n```";

fn floor_boundary(text: &str, mut i: usize) -> usize {
    if i >= text.len() {
        return text.len();
    }
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn is_fence_line(line: &str) -> bool {
    line.trim_start().starts_with(FENCE)
}

/// The opening line (e.g. "```rust") of a code fence left open at the end of `text`.
pub fn open_fence(text: &str) -> Option<&str> {
    let mut open = None;
    for line in text.split_inclusive('\n') {
        if is_fence_line(line) {
            open = if open.is_some() {
                None
            } else {
                Some(line.trim())
            };
        }
    }
    open
}

/// Where to end a message made of `text[..cut]`: at most `max` bytes, more
/// than `min` bytes (what was already sent cannot be taken back), and as
/// clean a place as the window allows.
pub fn cut_point(text: &str, min: usize, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    let max = floor_boundary(text, max);
    // Cutting very early makes many tiny messages; look in the upper half.
    let floor = min.max(max / 2);
    let window = &text[..max];
    let (mut para, mut line_cut, mut fenced_line) = (None, None, None);
    let mut in_fence = false;
    let mut pos = 0;
    let mut tail_start = 0;
    let mut tail_in_fence = false;
    for line in window.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        if !line.ends_with('\n') {
            tail_start = start;
            tail_in_fence = in_fence;
            break;
        }
        if is_fence_line(line) {
            in_fence = !in_fence;
        }
        tail_start = pos;
        tail_in_fence = in_fence;
        if pos <= floor || pos <= min {
            continue;
        }
        if in_fence {
            fenced_line = Some(pos);
        } else {
            line_cut = Some(pos);
            if line.trim().is_empty() {
                para = Some(pos);
            }
        }
    }
    let space_in = |from: usize| -> Option<usize> {
        let from = floor_boundary(text, from.max(floor).max(min + 1));
        window
            .get(from..)
            .and_then(|w| w.rfind([' ', '\t']))
            .map(|i| from + i + 1)
    };
    let tail_space = if tail_in_fence {
        None
    } else {
        space_in(tail_start)
    };
    para.or(line_cut)
        .or(tail_space)
        .or(fenced_line)
        .or_else(|| space_in(floor))
        .filter(|&c| c > min)
        .unwrap_or(max.max(floor_boundary(text, min + 1)))
}

/// Split a whole text into messages of at most `max` bytes.
pub fn split_message(text: &str, max: usize) -> Vec<String> {
    let max = max.max(64);
    let mut parts = Vec::new();
    let mut rest = text.to_owned();
    while rest.len() > max {
        // Leave room to close a fence we might cut.
        let cut = cut_point(&rest, 0, max - FENCE_CLOSE.len());
        let (head, tail) = rest.split_at(cut);
        let mut head = head.to_owned();
        let mut next = String::new();
        if let Some(opener) = open_fence(&head) {
            let opener = opener.to_owned();
            if !head.ends_with('\n') {
                head.push('\n');
            }
            head.push_str(FENCE);
            next.push_str(&opener);
            next.push('\n');
        }
        next.push_str(tail);
        parts.push(head.trim_end().to_owned());
        rest = next;
    }
    if !rest.trim().is_empty() || parts.is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_message() {
        assert_eq!(split_message("hello", 100), vec!["hello"]);
        assert_eq!(cut_point("hello", 0, 100), 5);
    }

    #[test]
    fn cuts_at_a_paragraph_break_when_one_is_in_reach() {
        let text = format!(
            "{}\n\n{}\n{}",
            "a".repeat(60),
            "b".repeat(20),
            "c".repeat(40)
        );
        let cut = cut_point(&text, 0, 100);
        assert_eq!(&text[..cut], format!("{}\n\n", "a".repeat(60)));
    }

    #[test]
    fn falls_back_to_a_line_then_a_space() {
        let text = format!("{}\n{} {}", "a".repeat(60), "b".repeat(20), "c".repeat(40));
        assert_eq!(cut_point(&text, 0, 100), 61);
        let words = "word ".repeat(40);
        let cut = cut_point(&words, 0, 100);
        assert!(words[..cut].ends_with(' ') && cut <= 100, "{cut}");
    }

    #[test]
    fn never_cuts_inside_a_fence_when_a_cut_outside_is_possible() {
        let text = format!(
            "intro line that is long enough to pass the floor of the window\n\n```rust\n{}```\nafter",
            "let x = 1;\n".repeat(10)
        );
        let cut = cut_point(&text, 0, 100);
        assert_eq!(open_fence(&text[..cut]), None, "cut at {cut}");
    }

    #[test]
    fn a_cut_fence_is_closed_and_reopened_with_its_language() {
        let code = "let value = compute(1);\n".repeat(20);
        let text = format!("```rust\n{code}```");
        let parts = split_message(&text, 200);
        assert!(parts.len() > 1);
        for p in &parts {
            assert!(p.len() <= 200, "{} bytes", p.len());
            assert_eq!(open_fence(p), None, "every part has balanced fences: {p:?}");
        }
        assert!(parts[1].starts_with("```rust\n"));
        let rejoined: String = parts
            .iter()
            .map(|p| p.replace("```rust\n", "").replace("\n```", ""))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            rejoined.matches("compute(1)").count(),
            20,
            "no content lost"
        );
    }

    #[test]
    fn respects_already_sent_text_and_char_boundaries() {
        let text = "é".repeat(100);
        let cut = cut_point(&text, 150, 181);
        assert!(text.is_char_boundary(cut) && cut > 150 && cut <= 181);
    }

    #[test]
    fn no_content_is_lost_across_parts() {
        let text = (0..500)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let parts = split_message(&text, 300);
        let words: Vec<&str> = parts.iter().flat_map(|p| p.split_whitespace()).collect();
        assert_eq!(words.len(), 500);
        assert!(parts.iter().all(|p| p.len() <= 300));
    }
}
