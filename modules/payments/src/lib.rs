//! The `payments` module: takes payment for orders. It exports `shop:payments/api`
//! and serves no HTTP: only other modules reach it.
//!
//! `charge` validates the card and the amount, then asks the card issuer. This module
//! is the shop's built-in test processor (no real money moves): it behaves like a
//! card network's sandbox, with fixed test cards for the refusals:
//!
//! | card number        | answer                          |
//! | ------------------ | ------------------------------- |
//! | 4000 0000 0000 0002 | declined: `card-declined`      |
//! | 4000 0000 0000 9995 | declined: `insufficient-funds` |
//! | any other valid number | charged                      |
//!
//! and, for every card: a number that fails the Luhn check or a month outside 1–12 is
//! `invalid-card`; an expiry month already past is `expired-card`; more than
//! 5 000.00 in one charge is `over-limit`; a zero amount or a currency other than
//! EUR, USD or GBP is `invalid-amount`.
//!
//! The processor's settings come from the deployment (`wasi:config`, under
//! `[modules.payments] config`): `currencies` (comma-separated, default EUR,USD,GBP),
//! `charge_limit_cents` (default 500000) and `processor_key`, the credentials the
//! processor is called with — a secret, read from the host's environment. The test
//! processor takes only test keys (`sk_test_…`); without one, no charge is taken and
//! the answer is `unavailable`.
//!
//! Every charge of a valid card, taken or declined, is recorded in the module's own
//! database (`charges`, see `migrations/`), never the full card number: its last four
//! digits. A charge that cannot be recorded is not taken.
//!
//! Events (`wit/shop/payments.wit` has the payloads): a charge taken publishes
//! `payments.charged` in the same transaction that records it, so the event exists
//! exactly when the charge does. Later, the card network may report that a charge
//! failed to settle (`POST /payments/settlements`, below): the charge is marked so and
//! `payments.failed` is published, in one transaction; orders then cancels the order
//! and gives its stock back.
//!
//! `POST /payments/settlements` with `{"receipt_id": "pay_…", "outcome": "failed",
//! "reason": "…"}` is the network's settlement report (the shop's test processor
//! accepts it from anyone; a real one would check the network's signature). It answers
//! 200 with the charge's new state — also when it was already failed — 404 for an
//! unknown receipt, 409 for a charge that was never taken.

wit_bindgen::generate!({
    path: [
        "../../wit/modhost/sql.wit",
        "../../wit/modhost/events.wit",
        "../../wit/wasi/config",
        "../../wit/shop/payments.wit",
    ],
    world: "shop:payments/payments",
    generate_all,
});

use exports::shop::payments::api::{ChargeError, ChargeRequest, DeclineReason, Guest, Receipt};
use modhost::events::publisher;
use modhost::sql::sql::{self as sql, Transaction, Value};
use modhost_guest::{Request, Response};
use serde::Deserialize;
use serde_json::json;

/// Currencies the processor settles, unless `currencies` says otherwise.
const CURRENCIES: &str = "EUR,USD,GBP";
/// Largest single charge, in cents, unless `charge_limit_cents` says otherwise.
const CHARGE_LIMIT_CENTS: u64 = 500_000;
/// What the test processor's credentials start with.
const TEST_KEY_PREFIX: &str = "sk_test_";

/// The processor's settings, as the deployment gives them.
struct Settings {
    currencies: Vec<String>,
    limit_cents: u64,
}

impl Settings {
    /// Reads the settings; a setting that cannot be used, or credentials the
    /// processor would refuse, make payments unavailable (nothing is charged).
    fn read() -> Result<Settings, ChargeError> {
        let misconfigured =
            |why: String| ChargeError::Unavailable(format!("payments is misconfigured: {why}"));
        let get = |key: &str| {
            wasi::config::store::get(key).map_err(|error| misconfigured(format!("{error:?}")))
        };
        match get("processor_key")? {
            Some(key) if key.starts_with(TEST_KEY_PREFIX) => {}
            Some(_) => {
                return Err(misconfigured(
                    "the test processor accepts only test keys (sk_test_…)".into(),
                ))
            }
            None => return Err(misconfigured("no processor_key is configured".into())),
        }
        let currencies = get("currencies")?
            .unwrap_or_else(|| CURRENCIES.to_string())
            .split(',')
            .map(|c| c.trim().to_ascii_uppercase())
            .filter(|c| !c.is_empty())
            .collect();
        let limit_cents = match get("charge_limit_cents")? {
            None => CHARGE_LIMIT_CENTS,
            Some(text) => text.parse().map_err(|_| {
                misconfigured(format!(
                    "charge_limit_cents {text:?} is not a number of cents"
                ))
            })?,
        };
        Ok(Settings {
            currencies,
            limit_cents,
        })
    }
}
/// Expiry dates further out than this many years are not real cards.
const MAX_YEARS_AHEAD: u16 = 20;

/// The issuer's test cards that refuse, and why.
const REFUSING_CARDS: &[(&str, DeclineReason)] = &[
    ("4000000000000002", DeclineReason::CardDeclined),
    ("4000000000009995", DeclineReason::InsufficientFunds),
];

struct Payments;

impl Guest for Payments {
    fn charge(request: ChargeRequest) -> Result<Receipt, ChargeError> {
        let settings = Settings::read()?;
        if request.amount_cents == 0 {
            return Err(ChargeError::InvalidAmount("the amount is zero".into()));
        }
        if !settings.currencies.contains(&request.currency) {
            return Err(ChargeError::InvalidAmount(format!(
                "currency {:?} is not one of {}",
                request.currency,
                settings.currencies.join(", ")
            )));
        }
        let number = card_number(&request.card.number)?;
        let card = &request.card;
        if !(1..=12).contains(&card.expiry_month) {
            return Err(ChargeError::InvalidCard(format!(
                "expiry month {} is not 1-12",
                card.expiry_month
            )));
        }
        let (year, month) = year_and_month(modhost_guest::unix_time());
        if card.expiry_year > year.saturating_add(MAX_YEARS_AHEAD) {
            return Err(ChargeError::InvalidCard(format!(
                "expiry year {} is too far ahead",
                card.expiry_year
            )));
        }
        if (card.expiry_year, card.expiry_month) < (year, month) {
            return Err(ChargeError::Declined(DeclineReason::ExpiredCard));
        }
        let declined = if request.amount_cents > settings.limit_cents {
            Some(DeclineReason::OverLimit)
        } else {
            REFUSING_CARDS
                .iter()
                .find(|(test, _)| *test == number)
                .map(|(_, reason)| *reason)
        };
        let receipt = Receipt {
            id: modhost_guest::new_id("pay"),
            order_id: request.order_id,
            amount_cents: request.amount_cents,
            currency: request.currency,
            card_last4: number[number.len() - 4..].to_string(),
        };
        let outcome = match declined {
            None => "charged".to_string(),
            Some(reason) => format!("declined: {reason:?}"),
        };
        record(&receipt, &outcome)?;
        match declined {
            None => Ok(receipt),
            Some(reason) => Err(ChargeError::Declined(reason)),
        }
    }
}

export!(Payments);

/// Writes one charge attempt to the ledger and, for a charge taken, publishes
/// `payments.charged` in the same transaction. If the ledger is unavailable no money
/// may move, so the charge is refused as `unavailable`.
fn record(receipt: &Receipt, outcome: &str) -> Result<(), ChargeError> {
    let unavailable = |what: String| {
        ChargeError::Unavailable(format!("the payments ledger is unavailable: {what}"))
    };
    let tx = sql::begin().map_err(|error| unavailable(format!("{error:?}")))?;
    tx.execute(
        "INSERT INTO charges (id, order_id, amount_cents, currency, card_last4, outcome, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            Value::Text(receipt.id.clone()),
            Value::Text(receipt.order_id.clone()),
            Value::Integer(receipt.amount_cents as i64),
            Value::Text(receipt.currency.clone()),
            Value::Text(receipt.card_last4.clone()),
            Value::Text(outcome.to_string()),
            Value::Integer(modhost_guest::unix_time() as i64),
        ],
    )
    .map_err(|error| unavailable(format!("{error:?}")))?;
    if outcome == "charged" {
        let payload = json!({
            "receipt_id": receipt.id,
            "order_id": receipt.order_id,
            "amount_cents": receipt.amount_cents,
            "currency": receipt.currency,
            "card_last4": receipt.card_last4,
        });
        publisher::publish_in(
            &tx,
            "payments.charged",
            &receipt.order_id,
            payload.to_string().as_bytes(),
            &[("content-type".into(), "application/json".into())],
        )
        .map_err(|error| unavailable(format!("publishing payments.charged: {error:?}")))?;
    }
    Transaction::commit(tx).map_err(|error| unavailable(format!("{error:?}")))
}

/// A settlement report from the card network.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settlement {
    receipt_id: String,
    outcome: String,
    #[serde(default)]
    reason: Option<String>,
}

fn handle(request: Request) -> Response {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("POST", ["payments", "settlements"]) => settle(&request),
        (method, ["payments", "settlements"]) => Response::method_not_allowed(method),
        _ => Response::not_found(&request.path),
    }
}

modhost_guest::http_module!(handle);

/// Records a charge that failed to settle and publishes `payments.failed`, once.
fn settle(request: &Request) -> Response {
    let report: Settlement = match request.json() {
        Ok(report) => report,
        Err(response) => return response,
    };
    if report.outcome != "failed" {
        return Response::error(
            422,
            "invalid_settlement",
            "only failed settlements are reported (outcome = \"failed\")",
        );
    }
    let reason = report
        .reason
        .filter(|reason| !reason.trim().is_empty())
        .unwrap_or_else(|| "the payment failed to settle".into());
    let unavailable = |error: &dyn std::fmt::Debug| {
        Response::error(
            503,
            "unavailable",
            &format!("the payments ledger is unavailable: {error:?}"),
        )
    };
    let tx = match sql::begin() {
        Ok(tx) => tx,
        Err(error) => return unavailable(&error),
    };
    let found = tx.query(
        "SELECT order_id, amount_cents, currency, outcome FROM charges WHERE id = $1",
        &[Value::Text(report.receipt_id.clone())],
    );
    let (order_id, amount_cents, currency, outcome) = match found
        .as_ref()
        .map(|rows| rows.rows.first().map(Vec::as_slice))
    {
        Ok(Some(
            [Value::Text(order), Value::Integer(amount), Value::Text(currency), Value::Text(outcome)],
        )) => (order.clone(), *amount, currency.clone(), outcome.clone()),
        Ok(_) => return Response::not_found(&format!("no charge {}", report.receipt_id)),
        Err(error) => return unavailable(error),
    };
    let answer = |state: &str| {
        Response::json(
            200,
            &json!({ "receipt_id": report.receipt_id, "order_id": order_id, "state": state }),
        )
    };
    match outcome.as_str() {
        "charged" => {}
        "settlement-failed" => return answer("settlement-failed"),
        _ => {
            return Response::error(
                409,
                "not_charged",
                &format!("charge {} was never taken ({outcome})", report.receipt_id),
            )
        }
    }
    let updated = tx.execute(
        "UPDATE charges SET outcome = 'settlement-failed' WHERE id = $1 AND outcome = 'charged'",
        &[Value::Text(report.receipt_id.clone())],
    );
    if let Err(error) = updated {
        return unavailable(&error);
    }
    let payload = json!({
        "receipt_id": report.receipt_id,
        "order_id": order_id,
        "amount_cents": amount_cents,
        "currency": currency,
        "reason": reason,
    });
    if let Err(error) = publisher::publish_in(
        &tx,
        "payments.failed",
        &order_id,
        payload.to_string().as_bytes(),
        &[("content-type".into(), "application/json".into())],
    ) {
        return unavailable(&error);
    }
    match Transaction::commit(tx) {
        Ok(()) => answer("settlement-failed"),
        Err(error) => unavailable(&error),
    }
}

/// The card number's digits, if it can be a card number: 12–19 digits (spaces and
/// dashes between them allowed) passing the Luhn check.
fn card_number(written: &str) -> Result<String, ChargeError> {
    let digits: String = written.chars().filter(|c| *c != ' ' && *c != '-').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) || !(12..=19).contains(&digits.len()) {
        return Err(ChargeError::InvalidCard(
            "a card number is 12-19 digits".into(),
        ));
    }
    if !luhn_valid(&digits) {
        return Err(ChargeError::InvalidCard(
            "the card number fails its check digit".into(),
        ));
    }
    Ok(digits)
}

/// The Luhn checksum: from the right, double every second digit (subtracting 9 when
/// that exceeds 9); the sum of all must be a multiple of 10.
fn luhn_valid(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// The UTC calendar year and month of a Unix time (Howard Hinnant's days-to-civil).
fn year_and_month(unix_seconds: u64) -> (u16, u8) {
    let days = (unix_seconds / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (
        u16::try_from(year).unwrap_or(u16::MAX),
        u8::try_from(month).unwrap_or(12),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_real_test_numbers_and_refuses_a_changed_digit() {
        assert!(luhn_valid("4242424242424242"));
        assert!(luhn_valid("4000000000000002"));
        assert!(luhn_valid("4000000000009995"));
        assert!(!luhn_valid("4242424242424241"));
    }

    #[test]
    fn calendar_months_of_known_instants() {
        assert_eq!(year_and_month(0), (1970, 1));
        assert_eq!(year_and_month(951_782_400), (2000, 2)); // 2000-02-29
        assert_eq!(year_and_month(1_798_761_599), (2026, 12)); // 2026-12-31T23:59:59
        assert_eq!(year_and_month(1_798_761_600), (2027, 1));
    }
}
