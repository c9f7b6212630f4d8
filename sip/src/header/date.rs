//! The Date header: `rfc1123-date`, always in GMT (RFC 3261 §20.17).

use crate::text::{Expected, Lex, trim_lws};

/// A date such as `Sat, 13 Nov 2010 23:29:00 GMT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, four digits.
    pub year: u16,
    /// Month, 1 to 12.
    pub month: u8,
    /// Day of the month, 1 to 31.
    pub day: u8,
    /// Hour, 0 to 23.
    pub hour: u8,
    /// Minute, 0 to 59.
    pub minute: u8,
    /// Second, 0 to 60 (a leap second).
    pub second: u8,
}

const WEEKDAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

fn date(s: &[u8]) -> Lex<Date> {
    let s = trim_lws(s);
    // "Sat, 13 Nov 2010 23:29:00 GMT" is exactly 29 bytes.
    let bad = |what, at| Err(Expected { what, at });
    if s.len() != 29 {
        return bad("'Wkd, DD Mon YYYY HH:MM:SS GMT'", 0);
    }
    if !WEEKDAYS.contains(&&s[0..3]) || &s[3..5] != b", " {
        return bad("a weekday (Mon to Sun) and ', '", 0);
    }
    let num = |r: std::ops::Range<usize>| -> Option<u16> {
        s[r].iter().try_fold(0u16, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u16::from(d - b'0'))
        })
    };
    let Some(month) = MONTHS.iter().position(|m| *m == &s[8..11]) else {
        return bad("a month (Jan to Dec)", 8);
    };
    let fields = (
        num(5..7),
        num(12..16),
        num(17..19),
        num(20..22),
        num(23..25),
    );
    let (Some(day), Some(year), Some(hour), Some(minute), Some(second)) = fields else {
        return bad("digits in the date and time", 5);
    };
    if s[7] != b' '
        || s[11] != b' '
        || s[16] != b' '
        || s[19] != b':'
        || s[22] != b':'
        || s[25] != b' '
    {
        return bad("'Wkd, DD Mon YYYY HH:MM:SS GMT'", 0);
    }
    if &s[26..] != b"GMT" {
        return bad("the time zone GMT", 26);
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return bad("a day from 1 to 31 and a valid time of day", 5);
    }
    Ok(Date {
        year,
        month: month as u8 + 1,
        day: day as u8,
        hour: hour as u8,
        minute: minute as u8,
        second: second as u8,
    })
}

impl<'a> super::TypedHeader<'a> for Date {
    const NAME: crate::HeaderName = crate::HeaderName::Date;
    fn parse(value: &'a [u8]) -> Result<Self, crate::Error> {
        date(value).map_err(|e| crate::Error::field(Self::NAME.as_str(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::TypedHeader;

    #[test]
    fn dates() {
        let d = Date::parse(b"Sat, 13 Nov 2010 23:29:00 GMT").unwrap();
        assert_eq!(
            (d.year, d.month, d.day, d.hour, d.minute, d.second),
            (2010, 11, 13, 23, 29, 0)
        );
        assert!(Date::parse(b"Fri, 01 Jan 2010 16:00:00 EST").is_err());
        assert!(Date::parse(b"Fri, 01 Foo 2010 16:00:00 GMT").is_err());
        assert!(Date::parse(b"Fri, 01 Jan 2010 25:00:00 GMT").is_err());
    }
}
