//! A lookup in progress ([`Lookup`]): one future per family, answers taken in arrival order
//! (RFC 8305 §3: the dialer starts on the first family that answers), or all together
//! ([`Lookup::all`]). Also the answers that need no resolver: IP literals and `localhost`.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use hickory_proto::rr::Name;

use super::{wire, DnsError, Family, FamilyAnswer, Source};

/// Answers still to come: one family's, or several families' at once (the system resolver
/// answers every family with one `getaddrinfo` call).
pub type FamilyFuture = Pin<Box<dyn Future<Output = Vec<FamilyAnswer>> + Send + 'static>>;

/// A lookup in progress: yields one [`FamilyAnswer`] per family asked, in arrival order.
/// Dropping it cancels the queries still running (their sockets close).
pub struct Lookup {
    order: Vec<Family>,
    ready: VecDeque<FamilyAnswer>,
    pending: Vec<FamilyFuture>,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("families", &self.order)
            .field("ready", &self.ready.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

/// Every family's answer of a finished lookup.
#[derive(Debug)]
pub struct Answer {
    /// Every address found, the families in the order they were asked for.
    pub addresses: Vec<IpAddr>,
    /// Each family's answer, in arrival order (who answered, how long it took).
    pub answers: Vec<FamilyAnswer>,
}

impl Lookup {
    /// A lookup of `families` whose answers come from `pending` (each future answers one or
    /// more families; together exactly the families asked).
    pub fn new(families: &[Family], pending: Vec<FamilyFuture>) -> Lookup {
        Lookup { order: families.to_vec(), ready: VecDeque::new(), pending }
    }

    /// A lookup that is already answered.
    pub fn answered(families: &[Family], answers: Vec<FamilyAnswer>) -> Lookup {
        Lookup { order: families.to_vec(), ready: answers.into(), pending: Vec::new() }
    }

    /// The families asked for, preferred first.
    pub fn families(&self) -> &[Family] {
        &self.order
    }

    /// The next family's answer, or `None` when every family has answered. Cancel-safe.
    pub async fn next(&mut self) -> Option<FamilyAnswer> {
        if let Some(answer) = self.ready.pop_front() {
            return Some(answer);
        }
        if self.pending.is_empty() {
            return None;
        }
        poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls for the next answer (`Ready(None)` when there is none left).
    pub fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<FamilyAnswer>> {
        if let Some(answer) = self.ready.pop_front() {
            return Poll::Ready(Some(answer));
        }
        let mut index = 0;
        while index < self.pending.len() {
            if let Poll::Ready(answers) = self.pending[index].as_mut().poll(cx) {
                drop(self.pending.swap_remove(index));
                self.ready.extend(answers);
                if let Some(answer) = self.ready.pop_front() {
                    return Poll::Ready(Some(answer));
                }
            } else {
                index += 1;
            }
        }
        if self.pending.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }

    /// True once every family has answered and every answer was taken.
    pub fn is_done(&self) -> bool {
        self.ready.is_empty() && self.pending.is_empty()
    }

    /// Waits for every family. `Ok` when at least one family has addresses; otherwise the most
    /// telling error (NXDOMAIN over a server error over a timeout; "no IPv4 or IPv6 address"
    /// when every family answered NODATA).
    pub async fn all(mut self) -> Result<Answer, DnsError> {
        let mut answers = Vec::new();
        while let Some(answer) = self.next().await {
            answers.push(answer);
        }
        let mut addresses = Vec::new();
        for family in &self.order {
            for answer in answers.iter().filter(|a| a.family == *family) {
                for ip in answer.result.iter().flatten() {
                    if !addresses.contains(ip) {
                        addresses.push(*ip);
                    }
                }
            }
        }
        if !addresses.is_empty() {
            return Ok(Answer { addresses, answers });
        }
        Err(most_telling(answers.into_iter().filter_map(|a| a.result.err()).collect()))
    }
}

/// The error to report when every family failed (see [`Lookup::all`]).
pub fn most_telling(mut errors: Vec<DnsError>) -> DnsError {
    let every_family_nodata =
        errors.len() > 1 && errors.iter().all(|e| matches!(e, DnsError::NoAddress { .. }));
    errors.sort_by_key(DnsError::rank);
    match errors.into_iter().next() {
        Some(DnsError::NoAddress { name, via, .. }) if every_family_nodata => {
            DnsError::NoAddress { name, families: "IPv4 or IPv6", via }
        }
        Some(error) => error,
        None => DnsError::InvalidName { name: String::new(), reason: "no address family asked for".into() },
    }
}

/// Checks `name` for a lookup: the hickory name to ask for, or a lookup already failed with
/// [`DnsError::InvalidName`] for every family (nothing is sent for an invalid name).
pub fn checked_name(name: &str, families: &[Family]) -> Result<Name, Lookup> {
    wire::parse_name(name).map_err(|reason| {
        let answers = families
            .iter()
            .map(|&family| FamilyAnswer {
                family,
                result: Err(DnsError::InvalidName { name: name.to_string(), reason: reason.clone() }),
                source: None,
                elapsed: Duration::ZERO,
            })
            .collect();
        Lookup::answered(families, answers)
    })
}

/// The answer for names that need no resolver: an IP literal (its own family only), or
/// `localhost` / `*.localhost` (RFC 6761 §6.3: `::1` and `127.0.0.1`, never sent to a server).
pub fn local_answer(name: &str, families: &[Family]) -> Option<Lookup> {
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    let local = |family: Family, ip: IpAddr| FamilyAnswer {
        family,
        result: Ok(vec![ip]),
        source: Some(Source::Local),
        elapsed: Duration::ZERO,
    };
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let family = Family::of(ip);
        if !families.contains(&family) {
            let reason = format!("an IP literal of the family not asked for ({})", family.label());
            return Some(Lookup::answered(
                families,
                families
                    .iter()
                    .map(|&f| FamilyAnswer {
                        family: f,
                        result: Err(DnsError::InvalidName { name: name.to_string(), reason: reason.clone() }),
                        source: None,
                        elapsed: Duration::ZERO,
                    })
                    .collect(),
            ));
        }
        return Some(Lookup::answered(families, vec![local(family, ip)]));
    }
    if !is_localhost(name) {
        return None;
    }
    let answers = families
        .iter()
        .map(|&family| match family {
            Family::V6 => local(family, Ipv6Addr::LOCALHOST.into()),
            Family::V4 => local(family, Ipv4Addr::LOCALHOST.into()),
        })
        .collect();
    Some(Lookup::answered(families, answers))
}

/// `localhost`, `*.localhost`, with or without the final dot, any case.
pub fn is_localhost(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let suffix = ".localhost";
    name.eq_ignore_ascii_case("localhost")
        || name.len() > suffix.len()
            && name.get(name.len() - suffix.len()..).is_some_and(|t| t.eq_ignore_ascii_case(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_localhost_are_answered_locally() {
        let both = [Family::V6, Family::V4];
        let answer = local_answer("LocalHost.", &both).unwrap().all().await.unwrap();
        assert_eq!(answer.addresses, ["::1".parse::<IpAddr>().unwrap(), "127.0.0.1".parse().unwrap()]);
        let answer = local_answer("a.b.localhost", &[Family::V4]).unwrap().all().await.unwrap();
        assert_eq!(answer.addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        let answer = local_answer("[2001:db8::1]", &both).unwrap().all().await.unwrap();
        assert_eq!(answer.addresses, ["2001:db8::1".parse::<IpAddr>().unwrap()]);
        assert!(local_answer("192.0.2.1", &[Family::V6]).unwrap().all().await.is_err());
        for name in ["notlocalhost", ".localhost", "localhost.com", "example.test"] {
            assert!(local_answer(name, &both).is_none(), "{name}");
        }
    }

    #[tokio::test]
    async fn invalid_names_fail_every_family_at_once() {
        let Err(lookup) = checked_name("a..invalid", &[Family::V6, Family::V4]) else { panic!("accepted") };
        let error = lookup.all().await.unwrap_err();
        assert!(matches!(error, DnsError::InvalidName { .. }), "{error}");
        assert!(error.to_string().contains("empty label"), "{error}");
    }
}
