//! Wall-clock times as the server writes them: RFC 3339 in JSON, a compact stamp in
//! directory names. Always UTC, so dumps from servers in different zones sort alike.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// `2026-11-23T18:40:02.123456Z`.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// `20261123-184002`, for dump directory names.
pub fn dir_stamp(t: OffsetDateTime) -> String {
    t.format(format_description!("[year][month][day]-[hour][minute][second]"))
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_directory_stamp_and_rfc3339() {
        let t = datetime!(2026-01-02 03:04:05.5 UTC);
        assert_eq!(dir_stamp(t), "20260102-030405");
        assert_eq!(rfc3339(t), "2026-01-02T03:04:05.5Z");
    }
}
