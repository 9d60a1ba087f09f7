//! A small lexical scan of PostgreSQL SQL text: splits it into statements (honouring
//! quotes, dollar quotes and nested comments) and returns the leading words of each, which
//! is all the relay needs to spot session-level commands in transaction pooling mode.

/// The first `n` words of every statement in `sql`, lower-cased (quoted identifiers keep
/// their case). Symbols such as `=` are returned as one-character words.
pub fn leading_words(sql: &str, n: usize) -> Vec<Vec<String>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut started = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b';' => {
                if started {
                    out.push(std::mem::take(&mut current));
                    started = false;
                }
                i += 1;
                continue;
            }
            c if c.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                i = b[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(b.len(), |p| i + p + 1);
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = skip_block_comment(b, i);
                continue;
            }
            _ => {}
        }
        started = true;
        let (word, next) = token(b, i, current.len() < n);
        if let Some(w) = word {
            current.push(w);
        }
        i = next.max(i + 1);
    }
    if started {
        out.push(current);
    }
    out
}

fn skip_block_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    b.len()
}

/// Reads one token at `i`: returns its word form (for identifiers, keywords and symbols)
/// when `keep` asks for it, and the index after it.
fn token(b: &[u8], i: usize, keep: bool) -> (Option<String>, usize) {
    let c = b[i];
    let word_char = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80;
    if c == b'\'' {
        let escapes = i > 0 && (b[i - 1] == b'e' || b[i - 1] == b'E');
        return (None, skip_quoted(b, i, b'\'', escapes));
    }
    if c == b'"' {
        let end = skip_quoted(b, i, b'"', false);
        let inner = &b[i + 1..end.saturating_sub(1).max(i + 1)];
        let word = keep.then(|| String::from_utf8_lossy(inner).replace("\"\"", "\""));
        return (word, end);
    }
    if c == b'$' {
        if let Some(end) = dollar_quote_end(b, i) {
            return (None, end);
        }
    }
    if word_char(c) {
        let end = b[i..]
            .iter()
            .position(|&c| !word_char(c))
            .map_or(b.len(), |p| i + p);
        // E'...', X'...' and B'...' strings: the prefix is not a word.
        let prefix = end - i == 1 && matches!(c | 0x20, b'e' | b'x' | b'b');
        if !keep || (prefix && b.get(end) == Some(&b'\'')) {
            return (None, end);
        }
        return (
            Some(String::from_utf8_lossy(&b[i..end]).to_ascii_lowercase()),
            end,
        );
    }
    (keep.then(|| (c as char).to_string()), i + 1)
}

fn skip_quoted(b: &[u8], start: usize, quote: u8, escapes: bool) -> usize {
    let mut i = start + 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

fn dollar_quote_end(b: &[u8], start: usize) -> Option<usize> {
    let tag_end = start + 1 + b[start + 1..].iter().position(|&c| c == b'$')?;
    let tag = &b[start..=tag_end];
    if !tag[1..tag.len() - 1]
        .iter()
        .all(|&c| c.is_ascii_alphanumeric() || c == b'_')
        || tag.get(1).is_some_and(|c| c.is_ascii_digit())
    {
        return None;
    }
    let body = tag_end + 1;
    let close = b[body..].windows(tag.len()).position(|w| w == tag)?;
    Some(body + close + tag.len())
}

#[cfg(test)]
mod tests {
    use super::leading_words;

    fn words(sql: &str) -> Vec<Vec<String>> {
        leading_words(sql, 3)
    }

    #[test]
    fn statements_split_on_semicolons_outside_quotes_and_comments() {
        let sql = "SELECT ';' ; /* ; */ set search_path = x; -- ; \n PREPARE p AS select $$;$$";
        assert_eq!(
            words(sql),
            vec![
                vec!["select".to_string()],
                vec!["set".into(), "search_path".into(), "=".into()],
                vec!["prepare".into(), "p".into(), "as".into()],
            ]
        );
    }

    #[test]
    fn nested_comments_and_escaped_strings_hide_nothing() {
        let sql = "/* a /* b */ ; c */ select E'\\'; drop' ; \"Set\" x";
        assert_eq!(
            words(sql),
            vec![vec!["select".to_string()], vec!["Set".into(), "x".into()]]
        );
    }

    #[test]
    fn empty_statements_are_skipped() {
        assert!(words(" ; ;; -- nothing").is_empty());
    }
}
