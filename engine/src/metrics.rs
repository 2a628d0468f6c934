//! The counters of one engine core, readable from outside through a cross-core call and
//! rendered as Prometheus text for a server's metrics endpoint or the CLI.

/// Counters of one core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoreMetrics {
    pub turns: u64,
    pub idle_turns: u64,
    /// Turns that slept because the core was idle (the back-off is visible here).
    pub backoff_sleeps: u64,
    pub requests: u64,
    pub replies: u64,
    pub malformed: u64,
    /// Messages from unknown sessions, or from another address than the session's.
    pub unknown_session: u64,
    /// HELLOs refused: no key, a wrong proof.
    pub refused_hellos: u64,
    pub fabric_errors: u64,
    pub storage_completions: u64,
    pub replies_dropped: u64,
    /// Replies sent in pieces (each piece is counted in `replies`).
    pub replies_in_pieces: u64,
    /// Sessions reaped: unused for the session idle time, their shm peer gone, or
    /// after their client's BYE.
    pub sessions_reaped: u64,
    /// BYEs taken (clients whose endpoint closed).
    pub byes: u64,
    /// Posts that met FI_EAGAIN or a full queue and were queued for a later turn.
    pub deferred_posts: u64,
    /// Messages held in their receive slot because the core was congested
    /// (back-pressure: the senders wait, nothing is dropped).
    pub parked_messages: u64,
    /// Bulk transfers (pulls and pushes) finished, and the bytes they moved.
    pub bulk_ops: u64,
    pub bulk_bytes: u64,
    pub bulk_errors: u64,
    /// Pushes given up because their peer was evicted (counted in `bulk_errors` too).
    pub bulk_evicted: u64,
}

impl CoreMetrics {
    /// The counters in Prometheus text exposition format, labelled with the core index.
    pub fn prometheus(&self, core: usize) -> String {
        let counters: [(&str, &str, u64); 20] = [
            ("turns", "Turns of the core's loop", self.turns),
            ("idle_turns", "Turns that found no work", self.idle_turns),
            (
                "backoff_sleeps",
                "Idle turns that slept (back-off)",
                self.backoff_sleeps,
            ),
            ("requests", "Requests from known sessions", self.requests),
            ("replies", "Replies sent", self.replies),
            ("malformed", "Messages that did not decode", self.malformed),
            (
                "unknown_session",
                "Messages from unknown sessions, or from another address than theirs",
                self.unknown_session,
            ),
            (
                "refused_hellos",
                "HELLOs refused: no key or a wrong proof",
                self.refused_hellos,
            ),
            (
                "fabric_errors",
                "Fabric error completions and call failures",
                self.fabric_errors,
            ),
            (
                "storage_completions",
                "Storage operations completed",
                self.storage_completions,
            ),
            (
                "replies_dropped",
                "Replies that could not be sent",
                self.replies_dropped,
            ),
            (
                "replies_in_pieces",
                "Replies sent in pieces the transport delivers safely",
                self.replies_in_pieces,
            ),
            (
                "sessions_reaped",
                "Sessions reaped: unused for the idle time, their peer gone or said BYE",
                self.sessions_reaped,
            ),
            (
                "byes",
                "BYEs taken from clients whose endpoint closed",
                self.byes,
            ),
            (
                "deferred_posts",
                "Posts that met a full queue and were retried on a later turn",
                self.deferred_posts,
            ),
            (
                "parked_messages",
                "Messages held back while the core was congested",
                self.parked_messages,
            ),
            ("bulk_ops", "Bulk transfers finished", self.bulk_ops),
            (
                "bulk_bytes",
                "Bytes moved by bulk transfers",
                self.bulk_bytes,
            ),
            (
                "bulk_errors",
                "Bulk transfers that failed",
                self.bulk_errors,
            ),
            (
                "bulk_evicted",
                "Pushes given up because their peer outlived the bulk timeout",
                self.bulk_evicted,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP nacre_core_{name}_total {help}.\n# TYPE nacre_core_{name}_total counter\nnacre_core_{name}_total{{core=\"{core}\"}} {value}\n"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_as_prometheus_text() {
        let m = CoreMetrics {
            requests: 7,
            backoff_sleeps: 2,
            ..Default::default()
        };
        let text = m.prometheus(3);
        assert!(text.contains("# TYPE nacre_core_requests_total counter\n"));
        assert!(text.contains("nacre_core_requests_total{core=\"3\"} 7\n"));
        assert!(text.contains("nacre_core_backoff_sleeps_total{core=\"3\"} 2\n"));
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 20);
    }
}
