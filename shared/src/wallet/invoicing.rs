//! The month's tax invoices (`gst::invoices`), one per account that used the API, walked through the
//! wallets' registry (every account that ever held money, closed ones too) with the run's saved place
//! (`gst::invoice_run`). An account whose invoice fails is held back and retried by every later run,
//! never holding up the others; a heavy account's month is read over as many runs as it takes.

use std::time::{Duration, Instant};

use crate::error::ApiResult;
use crate::gst::invoice_run::{self, InvoiceRun, hold_back, run_place, save_place};
use crate::gst::invoices::{INVOICE_AFTER, Invoiced, Reading, issue_invoice};
use crate::ports::Ports;

/// Accounts read from the registry per page.
const PAGE: u32 = 50;
/// Usage records read per page of an account's month.
const USAGE_PAGE: u32 = 1000;
/// Accounts held back retried per run.
const HELD_PER_RUN: u32 = 20;

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvoiceReport {
    pub issued: usize,
    /// Accounts whose invoice failed this run (held back, retried by the next runs).
    pub held_back: usize,
}

/// Issues the last month's invoices until the registry is done or `budget` is spent (the next run carries on
/// from the saved place), then retries the accounts held back.
pub async fn issue_month_invoices(ports: &Ports, budget: Duration) -> ApiResult<InvoiceReport> {
    let reading = Reading { deadline: Instant::now() + budget, page: USAGE_PAGE, pages: u32::MAX };
    issue_month_invoices_reading(ports, reading).await
}

/// [`issue_month_invoices`] reading usage as `reading` says (tests read a page of one call per run).
pub async fn issue_month_invoices_reading(ports: &Ports, reading: Reading) -> ApiResult<InvoiceReport> {
    let mut run = run_place(ports).await?;
    let mut report = InvoiceReport::default();
    if ports.clock().now() < run.month.ends() + INVOICE_AFTER {
        return Ok(report);
    }
    while !run.done && Instant::now() < reading.deadline {
        let (users, next) = super::registered_wallets(ports.store(), run.after.clone(), PAGE).await?;
        let finished = invoice_page(ports, &mut run, &users, reading, &mut report).await?;
        run.done = finished && next.is_none();
        save_place(ports, &run).await?;
        if !finished {
            return Ok(report);
        }
    }
    if run.done {
        retry_held(ports, run.month, reading, &mut report).await?;
    }
    Ok(report)
}

/// Invoices a page of accounts, moving the run's place past each one done. Returns whether all were done.
async fn invoice_page(
    ports: &Ports,
    run: &mut InvoiceRun,
    users: &[String],
    reading: Reading,
    report: &mut InvoiceReport,
) -> ApiResult<bool> {
    for user_id in users {
        match issue_invoice(ports, user_id, run.month, reading).await {
            Ok(Invoiced::Issued) => report.issued += 1,
            Ok(Invoiced::NoneDue) => {}
            Ok(Invoiced::Unfinished) => return Ok(false),
            Err(e) => {
                report.held_back += 1;
                if !hold_back(ports, user_id, run.month, &e.to_string()).await? {
                    tracing::error!(alert = crate::alerts::JOB_FAILED, job = "tax_invoices", %user_id, error = %e, "an account's tax invoice failed: held back, retried by every run");
                }
            }
        }
        run.after = Some(user_id.clone());
    }
    Ok(true)
}

/// Retries the accounts held back; each one issued (or found to owe none) is released.
async fn retry_held(
    ports: &Ports,
    month: crate::gst::invoices::InvoiceMonth,
    reading: Reading,
    report: &mut InvoiceReport,
) -> ApiResult<()> {
    for user_id in invoice_run::held(ports, month, HELD_PER_RUN).await? {
        if Instant::now() >= reading.deadline {
            break;
        }
        match issue_invoice(ports, &user_id, month, reading).await {
            Ok(Invoiced::Unfinished) => break,
            Ok(done) => {
                report.issued += usize::from(done == Invoiced::Issued);
                invoice_run::release(ports, &user_id, month).await?;
            }
            Err(e) => {
                report.held_back += 1;
                hold_back(ports, &user_id, month, &e.to_string()).await?;
                tracing::warn!(%user_id, error = %e, "a held-back tax invoice failed again");
            }
        }
    }
    Ok(())
}
