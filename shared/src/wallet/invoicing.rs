//! The month's tax invoices (`gst::invoices`), one per account that used the API, walked through the
//! wallets' registry (every account that ever held money, closed ones too) with the run's saved place.

use crate::error::ApiResult;
use crate::gst::invoices::{INVOICE_AFTER, issue_invoice, run_place, save_place};
use crate::ports::Ports;

/// Accounts read from the registry per page.
const PAGE: u32 = 50;

/// Issues the last month's invoices until the registry is done or `budget` is spent (the next run carries on
/// from the saved place). Returns how many this run issued.
pub async fn issue_month_invoices(ports: &Ports, budget: std::time::Duration) -> ApiResult<usize> {
    let started = std::time::Instant::now();
    let mut run = run_place(ports).await?;
    if ports.clock().now() < run.month.ends() + INVOICE_AFTER {
        return Ok(0);
    }
    let mut issued = 0;
    while !run.done {
        let (users, next) = super::registered_wallets(ports.store(), run.after.clone(), PAGE).await?;
        for user_id in &users {
            issued += usize::from(issue_invoice(ports, user_id, run.month).await?);
        }
        run.after = users.last().cloned().or(run.after);
        run.done = next.is_none();
        save_place(ports, &run).await?;
        if started.elapsed() >= budget {
            break;
        }
    }
    Ok(issued)
}
