//! Cron expressions (the `cron` crate: `sec min hour day month weekday [year]`)
//! with an IANA time zone, for schedules and repeating timers.

use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::expr::DEFAULT_TIME_ZONE;

/// A parsed cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct CronSpec {
    pub source: String,
    pub zone: chrono_tz::Tz,
    /// The zone was written in the file; otherwise it is a default that a
    /// tenant's own time zone replaces.
    pub zone_written: bool,
    schedule: cron::Schedule,
}

impl CronSpec {
    /// Parses `source` in `zone` (default Asia/Shanghai).
    ///
    /// # Errors
    /// A code and a message: `bad_cron`, `bad_time_zone` or `cron_never_fires`.
    pub fn parse(source: &str, zone: Option<&str>) -> Result<CronSpec, (&'static str, String)> {
        let zone_written = zone.is_some();
        let zone_name = zone.unwrap_or(DEFAULT_TIME_ZONE);
        let zone: chrono_tz::Tz = zone_name.parse().map_err(|_| {
            (
                "bad_time_zone",
                format!("`{zone_name}` is not an IANA time zone such as Asia/Shanghai"),
            )
        })?;
        let schedule = cron::Schedule::from_str(source).map_err(|e| {
            // The crate's message repeats the source with a caret line; keep its last line.
            let text = e.to_string();
            let why = text.lines().last().unwrap_or_default().trim().to_owned();
            (
                "bad_cron",
                format!("`{source}` is not a cron expression: {why}"),
            )
        })?;
        if schedule.upcoming(zone).next().is_none() {
            return Err(("cron_never_fires", format!("`{source}` never fires")));
        }
        Ok(CronSpec {
            source: source.to_owned(),
            zone,
            zone_written,
            schedule,
        })
    }

    /// This expression in `zone`, unless the file named a zone itself.
    #[must_use]
    pub fn with_default_zone(&self, zone: chrono_tz::Tz) -> CronSpec {
        let mut spec = self.clone();
        if !spec.zone_written {
            spec.zone = zone;
        }
        spec
    }

    /// The first time strictly after `at`, if any.
    pub fn next_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule
            .after(&at.with_timezone(&self.zone))
            .next()
            .map(|t| t.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn fires_at_local_wall_clock_time() {
        let daily = CronSpec::parse("0 0 8 * * *", Some("Asia/Shanghai"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        let at = Utc
            .with_ymd_and_hms(2026, 11, 20, 8, 0, 0)
            .single()
            .unwrap_or_default();
        // 08:00 UTC is 16:00 in Shanghai: the next 08:00 there is 00:00 UTC the next day.
        assert_eq!(
            daily.next_after(at),
            Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).single()
        );
    }

    #[test]
    fn a_tenant_zone_replaces_only_the_default() {
        let at = Utc
            .with_ymd_and_hms(2026, 11, 20, 8, 0, 0)
            .single()
            .unwrap_or_default();
        let berlin: chrono_tz::Tz = chrono_tz::Europe::Berlin;
        let default = CronSpec::parse("0 0 8 * * *", None).unwrap_or_else(|e| panic!("{e:?}"));
        // 08:00 in Berlin (UTC+1 in November) is 07:00 UTC, on the 21st.
        assert_eq!(
            default.with_default_zone(berlin).next_after(at),
            Utc.with_ymd_and_hms(2026, 11, 21, 7, 0, 0).single()
        );
        let written = CronSpec::parse("0 0 8 * * *", Some("Asia/Shanghai"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            written.with_default_zone(berlin).zone,
            chrono_tz::Asia::Shanghai
        );
    }

    #[test]
    fn refuses_bad_and_never_firing_expressions() {
        assert_eq!(
            CronSpec::parse("every day", None).err().map(|e| e.0),
            Some("bad_cron")
        );
        assert_eq!(
            CronSpec::parse("0 0 0 30 2 *", None).err().map(|e| e.0),
            Some("cron_never_fires")
        );
        assert_eq!(
            CronSpec::parse("0 0 8 * * *", Some("Mars/Olympus"))
                .err()
                .map(|e| e.0),
            Some("bad_time_zone")
        );
    }
}
