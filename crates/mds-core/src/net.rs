//! What a process's variables say about the network it needs.

/// Hosts that mean this machine's loopback, as they precede `:PORT`.
const LOOPBACK_HOSTS: &[&str] = &["127.0.0.1:", "localhost:", "[::1]:"];

/// The ports of this machine's loopback that `text` names as `HOST:PORT`,
/// in a URL (`postgresql://u:p@127.0.0.1:6432/db`) or bare. A host must
/// start where a URL's host can (`evil.localhost:1` is not loopback).
pub fn loopback_ports(text: &str) -> Vec<u16> {
    let mut ports = Vec::new();
    for host in LOOPBACK_HOSTS {
        let mut from = 0;
        while let Some(found) = text[from..].find(host) {
            let at = from + found;
            let starts_host = at == 0
                || matches!(
                    text.as_bytes()[at - 1],
                    b'/' | b'@' | b'=' | b' ' | b',' | b'"' | b'\''
                );
            let after = &text[at + host.len()..];
            let digits = &after[..after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len())];
            match digits.parse::<u16>() {
                Ok(port) if starts_host && port != 0 => ports.push(port),
                _ => {}
            }
            from = at + host.len();
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_ports_in_urls_and_nothing_else() {
        assert_eq!(
            loopback_ports("postgresql://u:p@127.0.0.1:6432/db?sslmode=disable"),
            vec![6432]
        );
        assert_eq!(
            loopback_ports("redis://default:x@localhost:6380/0"),
            vec![6380]
        );
        assert_eq!(loopback_ports("http://[::1]:8080/auth/v1"), vec![8080]);
        assert_eq!(
            loopback_ports("127.0.0.1:1,127.0.0.1:2 127.0.0.1:1"),
            vec![1, 2]
        );
        for not in [
            "http://evil.localhost:80/",
            "http://127.0.0.10:80/",
            "http://127.0.0.1/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1:99999/",
            "postgresql://db.example.com:5432/x",
            "http://x127.0.0.1:5/",
        ] {
            assert_eq!(loopback_ports(not), Vec::<u16>::new(), "{not}");
        }
    }
}
