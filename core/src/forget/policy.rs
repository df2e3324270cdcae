//! Retention policies: which snapshots to keep, and why.
//!
//! Rules follow the familiar scheme (restic, borg): snapshots are grouped (by host, paths and
//! kind, as chosen), each group is walked newest first, and
//! * `last n` keeps the n newest;
//! * `hourly/daily/weekly/monthly/yearly n` keep the newest snapshot of each of the n newest
//!   hours/days/ISO weeks/months/years that have a snapshot;
//! * `within d` keeps everything newer than d before the newest snapshot of the group;
//! * `tags` keeps snapshots carrying any of the tags; the tag [`PERMANENT_TAG`] always keeps.
//!
//! Calendar buckets are computed in a fixed UTC offset (`tz_offset_secs`), so "daily" means days
//! of the operator's time zone, not of UTC.

use std::collections::BTreeMap;

use cairn_format::{Snapshot, SnapshotId, SnapshotKind};

/// Snapshots with this tag are never forgotten.
pub const PERMANENT_TAG: &str = "permanent";

/// How many of each to keep. Zero means the rule is off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeepPolicy {
    /// The n newest.
    pub last: u32,
    /// One per hour, for the n newest hours.
    pub hourly: u32,
    /// One per day.
    pub daily: u32,
    /// One per ISO week.
    pub weekly: u32,
    /// One per month.
    pub monthly: u32,
    /// One per year.
    pub yearly: u32,
    /// Everything within this many seconds of the group's newest snapshot.
    pub within_secs: Option<i64>,
    /// Snapshots with any of these tags.
    pub tags: Vec<String>,
    /// Point-in-time recovery window: keeps everything newer than this many seconds before
    /// `now` *and* the newest snapshot older than that, so that any moment of the window can be
    /// restored (a base backup from before it plus WAL). For PostgreSQL base backups.
    pub recovery_window_secs: Option<i64>,
    /// "Now" for the recovery window, unix seconds (set by the caller).
    pub now_secs: i64,
    /// The UTC offset calendar buckets are computed in.
    pub tz_offset_secs: i32,
}

impl KeepPolicy {
    /// True when no rule is set (forget would remove everything but permanent snapshots).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within_secs.is_none()
            && self.recovery_window_secs.is_none()
            && self.tags.is_empty()
    }
}

/// What snapshots are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// Host name.
    pub host: bool,
    /// Backed-up paths.
    pub paths: bool,
    /// Snapshot kind (file tree or base backup).
    pub kind: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        Self {
            host: true,
            paths: true,
            kind: true,
        }
    }
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its time (unix seconds).
    pub time: i64,
    /// Its group key (for display).
    pub group: String,
    /// Kept?
    pub keep: bool,
    /// The rules that keep it (`last`, `daily`, ... ; empty when forgotten).
    pub reasons: Vec<&'static str>,
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// ISO 8601 (year, week) of a day since the epoch.
fn iso_week(days: i64) -> (i64, u32) {
    // 1970-01-01 was a Thursday; ISO weekday 1 = Monday.
    let weekday = (days + 3).rem_euclid(7) + 1;
    let thursday = days - weekday + 4;
    let (y, _, _) = civil(thursday);
    let jan1 = days_from_civil(y, 1, 1);
    (y, ((thursday - jan1) / 7 + 1) as u32)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Calendar bucket keys of a time for each rule.
fn buckets(secs: i64, tz: i32) -> [i64; 5] {
    let local = secs + i64::from(tz);
    let days = local.div_euclid(86_400);
    let hour = local.div_euclid(3600);
    let (y, m, _) = civil(days);
    let (wy, w) = iso_week(days);
    [
        hour,
        days,
        wy * 100 + i64::from(w),
        y * 100 + i64::from(m),
        y,
    ]
}

fn group_key(s: &Snapshot, by: GroupBy) -> String {
    let mut parts = Vec::new();
    if by.kind {
        parts.push(match s.kind {
            SnapshotKind::Files => "files".to_owned(),
            SnapshotKind::PgBaseBackup => "pg-base-backup".to_owned(),
            SnapshotKind::Other(b) => format!("kind-{b}"),
            _ => "other".to_owned(),
        });
    }
    if by.host {
        parts.push(format!("host={}", s.hostname));
    }
    if by.paths {
        let mut p: Vec<String> = s
            .paths
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        p.sort();
        parts.push(format!("paths={}", p.join(",")));
    }
    parts.join(" ")
}

/// Applies `policy` to `snapshots`; returns a decision for each, newest first within groups.
pub fn apply(
    snapshots: &[(SnapshotId, Snapshot)],
    policy: &KeepPolicy,
    by: GroupBy,
) -> Vec<Decision> {
    let mut groups: BTreeMap<String, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_key(&s.1, by)).or_default().push(s);
    }
    let mut out = Vec::new();
    for (key, mut members) in groups {
        members.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
        let newest = members.first().map(|s| s.1.time.secs).unwrap_or(0);
        let counts = [
            policy.hourly,
            policy.daily,
            policy.weekly,
            policy.monthly,
            policy.yearly,
        ];
        let names = ["hourly", "daily", "weekly", "monthly", "yearly"];
        let mut last_bucket: [Option<i64>; 5] = [None; 5];
        let mut used = [0u32; 5];
        for (i, (id, s)) in members.iter().map(|m| (&m.0, &m.1)).enumerate() {
            let mut reasons = Vec::new();
            if s.tags.iter().any(|t| t == PERMANENT_TAG) {
                reasons.push("permanent");
            }
            if (i as u64) < u64::from(policy.last) {
                reasons.push("last");
            }
            let b = buckets(s.time.secs, policy.tz_offset_secs);
            for r in 0..5 {
                if used[r] < counts[r] && last_bucket[r] != Some(b[r]) {
                    last_bucket[r] = Some(b[r]);
                    used[r] += 1;
                    reasons.push(names[r]);
                }
            }
            if policy
                .within_secs
                .is_some_and(|w| newest - s.time.secs <= w)
            {
                reasons.push("within");
            }
            if s.tags.iter().any(|t| policy.tags.contains(t)) {
                reasons.push("tag");
            }
            if let Some(w) = policy.recovery_window_secs {
                let edge = policy.now_secs - w;
                // Members are newest first: the first one at or before the edge is the base the
                // oldest moment of the window recovers from.
                let first_before = members.iter().position(|m| m.1.time.secs <= edge);
                if s.time.secs > edge || first_before == Some(i) {
                    reasons.push("recovery-window");
                }
            }
            out.push(Decision {
                id: *id,
                time: s.time.secs,
                group: key.clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use cairn_format::{BlobId, Timestamp};

    fn snap(n: u8, secs: i64) -> (SnapshotId, Snapshot) {
        let mut s = Snapshot::new(
            SnapshotKind::Files,
            Timestamp { secs, nanos: 0 },
            BlobId::default(),
        );
        s.hostname = "h".into();
        (SnapshotId::from_bytes([n; 32]), s)
    }

    fn kept(d: &[Decision]) -> Vec<i64> {
        let mut v: Vec<i64> = d.iter().filter(|d| d.keep).map(|d| d.time).collect();
        v.sort();
        v
    }

    fn t(s: &str) -> i64 {
        crate::pg::restore::parse_time(s).unwrap()
    }

    #[test]
    fn calendar() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        // 2021-01-03 (Sunday) is in ISO week 53 of 2020; 2021-01-04 starts week 1 of 2021.
        assert_eq!(iso_week(days_from_civil(2021, 1, 3)), (2020, 53));
        assert_eq!(iso_week(days_from_civil(2021, 1, 4)), (2021, 1));
        assert_eq!(iso_week(days_from_civil(2026, 12, 31)), (2026, 53));
    }

    #[test]
    fn last_and_daily_at_day_edges() {
        let snaps = vec![
            snap(1, t("2026-03-01 23:59:59")),
            snap(2, t("2026-03-02 00:00:00")),
            snap(3, t("2026-03-02 12:00:00")),
            snap(4, t("2026-03-03 08:00:00")),
        ];
        let mut p = KeepPolicy::default();
        p.daily = 2;
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![t("2026-03-02 12:00:00"), t("2026-03-03 08:00:00")]
        );
        p.daily = 3;
        assert_eq!(kept(&apply(&snaps, &p, GroupBy::default())).len(), 3);
        // In UTC+1 the 23:59:59 snapshot falls on March 2nd local: only two days remain.
        p.tz_offset_secs = 3600;
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![t("2026-03-02 12:00:00"), t("2026-03-03 08:00:00")]
        );
        let mut p = KeepPolicy::default();
        p.last = 1;
        let d = apply(&snaps, &p, GroupBy::default());
        assert_eq!(kept(&d), vec![t("2026-03-03 08:00:00")]);
        assert!(d.iter().filter(|d| !d.keep).all(|d| d.reasons.is_empty()));
    }

    #[test]
    fn weekly_monthly_yearly_edges() {
        // Sunday 2026-03-01 and Monday 2026-03-02 are in different ISO weeks but the same month.
        let snaps = vec![
            snap(1, t("2026-03-01 10:00:00")),
            snap(2, t("2026-03-02 10:00:00")),
            snap(3, t("2025-12-31 23:00:00")),
        ];
        let mut p = KeepPolicy::default();
        p.weekly = 5;
        assert_eq!(kept(&apply(&snaps, &p, GroupBy::default())).len(), 3);
        let mut p = KeepPolicy::default();
        p.monthly = 5;
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![t("2025-12-31 23:00:00"), t("2026-03-02 10:00:00")]
        );
        let mut p = KeepPolicy::default();
        p.yearly = 1;
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![t("2026-03-02 10:00:00")]
        );
        // In UTC+2 the New Year's Eve snapshot is already in 2026.
        p.yearly = 2;
        p.tz_offset_secs = 7200;
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![t("2026-03-02 10:00:00")]
        );
    }

    #[test]
    fn recovery_window_keeps_the_base_before_it() {
        let day = 86_400;
        let snaps = vec![
            snap(1, 10 * day),
            snap(2, 20 * day),
            snap(3, 25 * day),
            snap(4, 38 * day),
        ];
        let mut p = KeepPolicy::default();
        p.recovery_window_secs = Some(14 * day);
        p.now_secs = 40 * day;
        // Window starts at day 26: keep day 38 (inside) and day 25 (the base for day 26..38).
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![25 * day, 38 * day]
        );
        p.now_secs = 30 * day; // window from day 16: days 20, 25 inside, day 10 is the base
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![10 * day, 20 * day, 25 * day, 38 * day]
        );
    }

    #[test]
    fn within_tags_permanent_and_groups() {
        let mut snaps = vec![snap(1, 1000), snap(2, 5000), snap(3, 9000)];
        snaps[0].1.tags = vec![PERMANENT_TAG.into()];
        snaps[1].1.tags = vec!["monthly-archive".into()];
        let mut p = KeepPolicy::default();
        p.within_secs = Some(100);
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![1000, 9000]
        );
        p.tags = vec!["monthly-archive".into()];
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![1000, 5000, 9000]
        );
        // Groups: another host keeps its own newest.
        snaps.push(snap(4, 2000));
        snaps[3].1.hostname = "other".into();
        let mut p = KeepPolicy::default();
        p.last = 1;
        assert_eq!(
            kept(&apply(&snaps, &p, GroupBy::default())),
            vec![1000, 2000, 9000]
        );
        let by = GroupBy {
            host: false,
            paths: false,
            kind: false,
        };
        assert_eq!(kept(&apply(&snaps, &p, by)), vec![1000, 9000]);
    }
}
