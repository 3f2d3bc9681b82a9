//! A lookup for the host itself (`netswitch resolve`, `ConnectionManager.resolve` over the FFI):
//! the name resolved with the strategy's networks, each with its own resolver, like a dial would,
//! without connecting.
//!
//! Every chosen route (primaries and fallbacks) looks the name up at once. A primary's answer
//! wins as soon as it comes (the first primary in strategy order among those that answered); a
//! fallback's answer wins once every primary failed or the fallback delay has passed, as in a
//! dial: a silent primary does not hold the answer until the deadline.

use std::future::{poll_fn, Future};
use std::net::IpAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::direct::DirectOutbound;
use super::eyeballs::RaceNetwork;
use super::route::{Plan, Route};
use super::{AttemptError, DialAttempt, DialError};
use crate::dns::{Answer, DnsError, Family, FamilyAnswer, Source};
use crate::metadata::{ConnectionOptions, Destination, Host, Metadata};

/// What a lookup for the host found.
#[derive(Debug)]
pub struct NameReport {
    /// The addresses, the preferred family first (domain strategy).
    pub addresses: Vec<IpAddr>,
    /// The interface whose resolver answered (`None`: the system route).
    pub interface: Option<String>,
    /// That route's answers per family: who answered and when.
    pub answers: Vec<FamilyAnswer>,
    /// Lookups that failed on routes tried before it (and its own failed families).
    pub failed: Vec<DialAttempt>,
    /// Time the whole lookup took.
    pub elapsed: Duration,
}

type RouteLookup = Pin<Box<dyn Future<Output = Result<Answer, DnsError>> + Send>>;

impl DirectOutbound {
    /// Resolves `name` (a domain or an IP literal) with the routes the strategy picks for a
    /// connection with `options`, each with its own resolver, by `connect_timeout` (see the
    /// module docs). Errors: no network (`DialError::Network`), or `DialError::Resolve` with the
    /// most telling lookup error (NXDOMAIN first).
    pub async fn lookup_name(
        &self,
        name: &str,
        options: &ConnectionOptions,
    ) -> Result<NameReport, DialError> {
        let started = Instant::now();
        let host = Host::parse(name).map_err(|_| DialError::Resolve {
            host: name.to_string(),
            source: Box::new(DnsError::InvalidName {
                name: name.to_string(),
                reason: "not a host name".into(),
            }),
        })?;
        let mut metadata = Metadata::new(Destination { host, port: 0 });
        metadata.options = options.clone();
        let e = self.effective(&metadata);
        let deadline = crate::deadline::from_now(e.connect_timeout);
        let plan = self.plan(&metadata, e.domain_strategy)?;
        let (name, families) = match plan {
            Plan::Addresses(addresses) => {
                let addresses: Vec<IpAddr> = addresses.iter().map(|a| a.ip()).collect();
                let answers = addresses
                    .iter()
                    .map(|ip| FamilyAnswer {
                        family: Family::of(*ip),
                        result: Ok(vec![*ip]),
                        source: Some(Source::Local),
                        elapsed: Duration::ZERO,
                    })
                    .collect();
                let elapsed = started.elapsed();
                return Ok(NameReport { addresses, interface: None, answers, failed: Vec::new(), elapsed });
            }
            Plan::Name { name, families, .. } => (name, families),
        };
        let (primaries, fallbacks) =
            self.routes(&metadata, &e, &Plan::Name { name: name.clone(), port: 0, families })?;
        let primary_count = primaries.len();
        let routes: Vec<Route> = primaries.into_iter().chain(fallbacks).collect();
        let mut pending: Vec<Option<RouteLookup>> = routes
            .iter()
            .map(|route| {
                let usable: Vec<Family> = families.iter().copied().filter(|f| route.supports(*f)).collect();
                let asked: &[Family] = if usable.is_empty() { families } else { &usable };
                Some(Box::pin(self.resolver_for(route).lookup(&name, asked, deadline).all()) as RouteLookup)
            })
            .collect();
        let mut results: Vec<Option<Result<Answer, DnsError>>> = routes.iter().map(|_| None).collect();
        let mut fallback_timer = Box::pin(tokio::time::sleep(e.fallback_delay));
        let winner = poll_fn(|cx| {
            for (slot, result) in pending.iter_mut().zip(results.iter_mut()) {
                if let Some(future) = slot {
                    if let Poll::Ready(done) = future.as_mut().poll(cx) {
                        *result = Some(done);
                        *slot = None;
                    }
                }
            }
            let answered = |range: std::ops::Range<usize>| {
                range.into_iter().find(|&i| matches!(results[i], Some(Ok(_))))
            };
            if let Some(index) = answered(0..primary_count) {
                return Poll::Ready(Some(index));
            }
            let primaries_failed = results[..primary_count].iter().all(|r| matches!(r, Some(Err(_))));
            if primaries_failed || fallback_timer.as_mut().poll(cx).is_ready() {
                if let Some(index) = answered(primary_count..results.len()) {
                    return Poll::Ready(Some(index));
                }
            }
            if results.iter().all(Option::is_some) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        let mut failed = Vec::new();
        let mut found = None;
        for (index, (route, result)) in routes.iter().zip(results).enumerate() {
            let interface = route.name().map(str::to_string);
            match result {
                Some(Ok(answer)) if Some(index) == winner => found = Some((interface, answer)),
                Some(Err(error)) => failed.push(DialAttempt {
                    address: None,
                    interface,
                    elapsed: started.elapsed(),
                    error: AttemptError::Resolve(Box::new(error)),
                }),
                _ => {}
            }
        }
        let Some((interface, answer)) = found else {
            return Err(DirectOutbound::failure(&metadata_for(&name), failed));
        };
        let Answer { addresses, answers } = answer;
        let (answers, errors): (Vec<FamilyAnswer>, Vec<FamilyAnswer>) =
            answers.into_iter().partition(|a| a.result.is_ok());
        for error in errors {
            if let Err(source) = error.result {
                failed.push(DialAttempt {
                    address: None,
                    interface: interface.clone(),
                    elapsed: error.elapsed,
                    error: AttemptError::Resolve(Box::new(source)),
                });
            }
        }
        Ok(NameReport { addresses, interface, answers, failed, elapsed: started.elapsed() })
    }
}

fn metadata_for(name: &str) -> Metadata {
    Metadata::new(Destination::domain(name, 0))
}
