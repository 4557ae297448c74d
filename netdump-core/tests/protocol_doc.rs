//! docs/PROTOCOL.md and `proto::field` say the same: each message's table lists the same
//! fixed fields at the same offsets and sizes, and its variable part starts where the
//! field constants say.

use netdump_core::proto::field::{self, Field};

/// The rows `| offset | size | … |` of the table under the heading `### <name>`: for
/// each row, its offset (when a number) and its size (when a number).
fn table(doc: &str, name: &str) -> Vec<(Option<usize>, Option<usize>)> {
    let mut lines = doc.lines().skip_while(|l| {
        let Some(h) = l.strip_prefix("### ") else { return true };
        // The heading's name is what comes before a parenthesis.
        h.split(" (").next() != Some(name)
    });
    assert!(lines.next().is_some(), "no heading ### {name} in docs/PROTOCOL.md");
    lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let (offset, size) = (cells.get(1)?, cells.get(2)?);
            if *offset == "offset" || offset.starts_with("---") {
                return None;
            }
            Some((offset.parse().ok(), size.parse().ok()))
        })
        .collect()
}

fn check(doc: &str, name: &str, layout: &[Field], variable_at: Option<usize>) {
    let rows = table(doc, name);
    let fixed: Vec<(usize, usize)> = rows
        .iter()
        .filter_map(|r| match r {
            (Some(o), Some(s)) => Some((*o, *s)),
            _ => None,
        })
        .collect();
    let want: Vec<(usize, usize)> = layout.iter().map(|f| (f.start, f.len())).collect();
    assert_eq!(fixed, want, "{name}: the documented fixed fields against proto::field");
    let variable = rows.iter().find_map(|r| match r {
        (Some(o), None) => Some(*o),
        _ => None,
    });
    assert_eq!(variable, variable_at, "{name}: where the variable part starts");
    // The fields tile the fixed part: no gap, no overlap.
    let mut end = 0;
    for f in layout {
        assert_eq!(f.start, end, "{name}: a gap or an overlap before {f:?}");
        end = f.end;
    }
}

#[test]
fn every_message_table_matches_the_field_constants() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md")).unwrap();
    check(&doc, "HELLO", field::hello::LAYOUT, Some(field::hello::NAME));
    check(&doc, "HELLO_ACK", field::hello_ack::LAYOUT, None);
    check(&doc, "CRASH", field::crash::LAYOUT, Some(field::crash::RANGES));
    check(&doc, "DECISION", field::decision::LAYOUT, None);
    check(&doc, "DATA", field::data::LAYOUT, Some(field::data::DATA));
    check(&doc, "ACK", field::ack::LAYOUT, Some(field::ack::BITMAP));
    check(&doc, "FINISH", field::finish::LAYOUT, None);
    check(&doc, "FINISH_ACK", field::finish_ack::LAYOUT, None);
    check(&doc, "ABORT", field::text::LAYOUT, Some(field::text::TEXT));
    check(&doc, "ERROR", field::text::LAYOUT, Some(field::text::TEXT));
    // Version 2.
    check(&doc, "HELLO v2", field::hello_v2::LAYOUT, Some(field::hello_v2::HANDSHAKE));
    check(&doc, "HELLO_ACK v2", field::hello_ack_v2::LAYOUT, Some(field::hello_ack_v2::HANDSHAKE));
    check(&doc, "Sealed payload", field::sealed::LAYOUT, Some(field::sealed::CIPHERTEXT));
    check(&doc, "Excluded-run record", field::excluded_run::LAYOUT, None);
}
