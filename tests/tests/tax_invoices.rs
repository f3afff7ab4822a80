//! The month's tax invoice and refund vouchers, end to end on both stores: a month of use across two models
//! invoiced once by the jobs in the next month, adjusted against the advance its receipt voucher taxed;
//! a closed account's money returned to its payment with a refund voucher reversing the GST on it. Every
//! PDF is read back as text.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, on_both_stores, pdf_text};
use serde_json::{Value, json};
use shared::clock::{Clock, FinancialYear};
use shared::gst::invoice_run;
use shared::gst::invoices::{InvoiceMonth, Reading};
use shared::gst::{DocumentKind, TaxDocument};
use shared::money::UNITS_PER_PAISA;
use shared::secrets::SecretString;
use shared::store::{Condition, Put, Table};
use shared::wallet::invoicing::{InvoiceReport, issue_month_invoices_reading};
use shared::wallet::metering::{self, BalanceHints};

on_both_stores!(
    a_month_of_use_across_two_models_is_invoiced_once_against_its_advance,
    a_closed_accounts_refund_gets_a_refund_voucher_reversing_its_gst,
    a_heavy_month_is_read_over_several_runs_and_a_failing_account_holds_up_no_other,
);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One settled call of `model` costing `cost` wallet units, as the gateway charges it.
async fn call(api: &TestApi, user: &str, model: &str, tokens: (u64, u64), cost: i64) -> TestResult {
    let id = format!("req_{}", shared::secrets::random_suffix());
    let held = metering::HeldCall {
        request_id: id.clone(),
        key_id: "key_invoice".into(),
        model: model.into(),
        prompt_tokens: tokens.0,
        completion_tokens: tokens.1,
    };
    let hints = BalanceHints::default();
    let hold = metering::place_call_hold(&api.state.ports, &hints, user, cost, &held).await?;
    let mut usage = e2e::usage_record(&id, tokens, api.clock.now());
    usage.model = model.into();
    let far = api.clock.now_epoch() + 365 * 86_400;
    let expiries = metering::Expiries { usage: far, ledger: far };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let settlement = metering::Settlement { cost, usage, expiries, deadline };
    metering::settle(api.state.store.as_ref(), &hints, &hold, settlement).await?;
    Ok(())
}

/// A listed document's PDF, as text.
async fn pdf_of(api: &TestApi, token: &str, summary: &Value) -> Result<String, Error> {
    let url = api.url(summary["pdf_url"].as_str().ok_or("no pdf_url")?);
    pdf_text(&api.http.get(url).bearer_auth(token).send().await?.error_for_status()?.bytes().await?)
}

async fn listed(api: &TestApi, token: &str) -> Result<Vec<Value>, Error> {
    let page: Value =
        api.http.get(api.url("/v1/tax-documents")).bearer_auth(token).send().await?.error_for_status()?.json().await?;
    Ok(page["data"].as_array().cloned().unwrap_or_default())
}

async fn a_month_of_use_across_two_models_is_invoiced_once_against_its_advance(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("monthly@example.in").await?;
    api.fund(&token, 1_000).await?;
    // ₹123.45 on one model; ₹10.005 on another (1,000.5 paise: rounded half up, 1,001).
    call(&api, &user, "llama-3.1-8b", (9_000, 3_000), 12_345 * UNITS_PER_PAISA).await?;
    call(&api, &user, "gpt-oss-120b", (500, 250), 10_005 * UNITS_PER_PAISA / 10).await?;
    let month = InvoiceMonth::of(api.clock.now());
    assert_eq!(jobs::run(&api.state).await?.tax_invoices_issued, 0, "not before the month is over");

    // 01:00 IST on the 1st: calls begun before midnight may still be settling, so not yet.
    api.clock.advance(month.ends() + Duration::hours(1) - api.clock.now());
    assert_eq!(jobs::run(&api.state).await?.tax_invoices_issued, 0, "not while late calls may settle");
    // 09:00 IST: the jobs invoice the month, once.
    api.clock.advance(month.ends() + Duration::hours(9) - api.clock.now());
    let report = jobs::run(&api.state).await?;
    assert_eq!((report.tax_invoices_issued, report.failed_jobs.len()), (1, 0), "{report:?}");
    assert_eq!(jobs::run(&api.state).await?.tax_invoices_issued, 0, "a month is invoiced once");

    // Weeks later: a new session.
    let login = api.login("monthly@example.in", "correct horse battery").await?.error_for_status()?;
    let token = login.json::<Value>().await?["token"].as_str().ok_or("no token")?.to_owned();
    let documents = listed(&api, &token).await?;
    let summary = documents.iter().find(|d| d["kind"] == "tax_invoice").ok_or("no tax invoice")?;
    let year = FinancialYear::of(api.clock.now()).short();
    assert_eq!(summary["number"], json!(format!("TI/{year}/000001")));
    let url = summary["json_url"].as_str().ok_or("json_url")?;
    let invoice: Value =
        api.http.get(api.url(url)).bearer_auth(&token).send().await?.error_for_status()?.json().await?;
    let lines: Vec<(Value, Value, Value)> = invoice["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| (l["description"].clone(), l["quantity"].clone(), l["taxable_paise"].clone()))
        .collect();
    assert_eq!(
        lines,
        [
            (json!("LLM inference API: gpt-oss-120b"), json!(750), json!(1_001)),
            (json!("LLM inference API: llama-3.1-8b"), json!(12_000), json!(12_345)),
        ]
    );
    // Intra-state (Karnataka): 9% + 9% of each line, rounded half up per line.
    assert_eq!(
        invoice["totals"],
        json!({"taxable_paise": 13_346, "cgst_paise": 1_201, "sgst_paise": 1_201, "igst_paise": 0, "total_paise": 15_748})
    );
    // The advance's receipt voucher already charged this GST: nothing more is payable.
    assert_eq!(invoice["references"]["advances_adjusted_paise"], 13_346);
    assert_eq!(invoice["references"]["tax_payable_paise"], 0);
    assert_eq!(invoice["references"]["period"], json!(month.id()));
    let left = shared::gst::advances::unadjusted(api.state.store.as_ref(), &user).await?;
    assert_eq!(left, 100_000 - 13_346, "the rest of the advance waits for later months");

    let text = pdf_of(&api, &token, summary).await?;
    for expected in [
        "TAX INVOICE",
        "gpt-oss-120b",
        "llama-3.1-8b",
        "Quantity: 12000 tokens",
        "SAC 998315",
        "advances adjusted: 133.46",
        "tax payable: 0.00",
        "Total amount: 157.48",
    ] {
        assert!(text.contains(expected), "the PDF says {expected}: {text}");
    }
    Ok(())
}

async fn a_closed_accounts_refund_gets_a_refund_voucher_reversing_its_gst(backend: Backend) -> TestResult {
    let operators = json!({ "meera.ops@inferexai.in": "ops-token-meera" }).to_string();
    let config = shared::config::Config { admin_token: Some(SecretString::new(operators)), ..Default::default() };
    let api = TestApi::start_with(backend, config).await?;
    let (user, token) = api.verified_user("leaving@example.in").await?;
    // Billed in Maharashtra: IGST.
    api.set_billing_profile(&token, "27").await?;
    let payment = api.fund(&token, 100).await?;
    assert_eq!(payment.amount, 11_800);
    api.clock.advance(Duration::seconds(1));
    let close = api
        .http
        .delete(api.url("/v1/account"))
        .bearer_auth(&token)
        .json(&json!({ "password": "correct horse battery" }));
    close.send().await?.error_for_status()?;
    assert_eq!(jobs::run(&api.state).await?.closure_refunds.refunds_asked, 1);
    assert_eq!(api.razorpay.process_refunds().await, 1);

    let documents = shared::gst::documents::documents_of(api.state.store.as_ref(), &user).await?;
    let voucher: &TaxDocument =
        documents.iter().find(|d| d.kind == DocumentKind::RefundVoucher).ok_or("no refund voucher")?;
    let year = FinancialYear::of(api.clock.now()).short();
    assert_eq!(voucher.number.as_deref(), Some(format!("RF/{year}/000001").as_str()));
    // The ₹100 advance and the ₹18 IGST charged on it, reversed.
    let totals = voucher.totals;
    assert_eq!(
        (totals.taxable_paise, totals.igst_paise, totals.cgst_paise, totals.total_paise),
        (10_000, 1_800, 0, 11_800)
    );
    assert_eq!(voucher.recipient.state_code, "27", "the recipient the advance's voucher named");
    let receipt = documents.iter().find(|d| d.kind == DocumentKind::ReceiptVoucher).ok_or("no receipt voucher")?;
    assert_eq!(voucher.references["receipt_voucher"], json!(receipt.number));
    assert_eq!(shared::gst::advances::unadjusted(api.state.store.as_ref(), &user).await?, 0, "given back");
    let text = pdf_text(&shared::gst::pdf::render(voucher))?;
    for expected in ["REFUND VOUCHER", "IGST @ 18%: 18.00", "Total amount: 118.00", "Rupees One Hundred Eighteen Only"]
    {
        assert!(text.contains(expected), "the PDF says {expected}: {text}");
    }
    Ok(())
}

/// One jobs run of the month's invoices reading one call per page, one page per account.
async fn one_page_run(api: &TestApi) -> Result<InvoiceReport, Error> {
    let reading =
        Reading { deadline: std::time::Instant::now() + std::time::Duration::from_secs(3600), page: 1, pages: 1 };
    Ok(issue_month_invoices_reading(&api.state.ports, reading).await?)
}

async fn a_heavy_month_is_read_over_several_runs_and_a_failing_account_holds_up_no_other(
    backend: Backend,
) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (heavy, token) = api.verified_user("heavy@example.in").await?;
    api.fund(&token, 1_000).await?;
    for (model, rupees) in [("llama-3.1-8b", 10), ("gpt-oss-120b", 20), ("llama-3.1-8b", 30)] {
        call(&api, &heavy, model, (1_000, 1_000), rupees * 100 * UNITS_PER_PAISA).await?;
    }
    let (broken, token) = api.verified_user("broken@example.in").await?;
    api.fund(&token, 100).await?;
    call(&api, &broken, "llama-3.1-8b", (10, 10), 100 * UNITS_PER_PAISA).await?;
    // The broken account's only call, unreadable: its invoice fails every time.
    let store = api.state.store.as_ref();
    let mut record = shared::store::user_items(store, &broken, shared::store::schema::prefix::USAGE)
        .await?
        .pop()
        .ok_or("no usage record")?;
    let original = record.clone();
    record.attrs.insert("model".into(), json!(42));
    store.put(Put { table: Table::Main, item: record, condition: Condition::Always }).await?;

    let month = InvoiceMonth::of(api.clock.now());
    api.clock.advance(month.ends() + Duration::hours(9) - api.clock.now());
    let mut reports = Vec::new();
    while reports.len() < 10 {
        let report = one_page_run(&api).await?;
        reports.push(report);
        if report.issued == 1 {
            break;
        }
    }
    // The heavy month took several runs, each reading one call of it; the broken account was held back.
    assert!(reports.len() >= 3, "{reports:?}");
    assert_eq!(reports.iter().map(|r| r.issued).sum::<usize>(), 1, "{reports:?}");
    // Held back in the run that reached it, and retried in the same run when it came after the heavy one.
    assert!(reports.iter().map(|r| r.held_back).sum::<usize>() >= 1, "{reports:?}");
    let id = shared::gst::invoices::tax_invoice_id(&heavy, month);
    let invoice = shared::gst::documents::document_of(store, &heavy, &id).await?;
    let lines: Vec<(Option<i64>, i64)> = invoice.lines.iter().map(|l| (l.quantity, l.tax.taxable_paise)).collect();
    assert_eq!(lines, [(Some(2_000), 2_000), (Some(4_000), 4_000)], "every call of the month, once");
    assert_eq!(invoice_run::held(&api.state.ports, month, 10).await?, vec![broken]);

    // Later runs retry it; once the record reads again the account is invoiced and released.
    assert_eq!(one_page_run(&api).await?, InvoiceReport { issued: 0, held_back: 1 });
    store.put(Put { table: Table::Main, item: original, condition: Condition::Always }).await?;
    // One call read per run: the page that reads it, then the one that finds no more.
    assert_eq!(one_page_run(&api).await?, InvoiceReport { issued: 0, held_back: 0 });
    assert_eq!(one_page_run(&api).await?, InvoiceReport { issued: 1, held_back: 0 });
    assert!(invoice_run::held(&api.state.ports, month, 10).await?.is_empty());
    assert_eq!(one_page_run(&api).await?, InvoiceReport::default(), "each month once");
    Ok(())
}
