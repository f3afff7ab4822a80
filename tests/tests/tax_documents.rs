//! GST on top-ups and their receipt vouchers, end to end on both stores: the tax split by place of supply,
//! the order for the credit plus GST, the voucher (JSON and PDF, read back as text with `pdftotext`) with
//! the business's GSTIN when it has one, the numbering under hundreds of concurrent issues, a voucher left
//! due by a stopped process, and the retention of eight financial years.

use std::sync::Arc;

use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::clock::{Clock, FinancialYear};
use shared::gst::receipts::{AdvanceReceived, DueDocument, due_put, issue_due, issue_receipt};
use shared::gst::{Party, TaxSplit};

on_both_stores!(
    an_intra_state_top_up_pays_cgst_and_sgst_and_gets_a_receipt_voucher,
    an_inter_state_customer_pays_igst,
    a_business_voucher_carries_its_verified_gstin,
    hundreds_of_vouchers_issued_at_once_are_numbered_without_gaps,
    parts_of_a_taxed_payment_taken_back_take_back_all_its_credit,
);

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A top-up of `credit_paise`, paid and delivered by webhook; returns the top-up as the API answered it.
async fn paid_topup(api: &TestApi, token: &str, credit_paise: i64) -> Result<Value, Error> {
    Ok(paid_topup_and_payment(api, token, credit_paise).await?.0)
}

async fn paid_topup_and_payment(
    api: &TestApi,
    token: &str,
    credit_paise: i64,
) -> Result<(Value, shared::razorpay::Payment), Error> {
    api.ensure_billing_profile(token).await?;
    let created =
        api.http.post(api.url("/v1/wallet/topups")).bearer_auth(token).json(&json!({ "amount_paise": credit_paise }));
    let created: Value = created.send().await?.error_for_status()?.json().await?;
    let order = created["razorpay_order_id"].as_str().ok_or("no order")?;
    let payment = api.razorpay.pay(order, "captured", None).ok_or("unknown order")?;
    api.razorpay.deliver(&api.razorpay.payment_webhook("payment.captured", &payment)).await.ok_or("delivery")?;
    Ok((created, payment))
}

async fn documents(api: &TestApi, token: &str) -> Result<Vec<Value>, Error> {
    let listed: Value =
        api.http.get(api.url("/v1/tax-documents")).bearer_auth(token).send().await?.error_for_status()?.json().await?;
    Ok(listed["data"].as_array().cloned().unwrap_or_default())
}

/// The document as `json_url` answers it.
async fn document_json(api: &TestApi, token: &str, summary: &Value) -> Result<Value, Error> {
    let url = summary["json_url"].as_str().ok_or("no json_url")?;
    Ok(api.http.get(api.url(url)).bearer_auth(token).send().await?.error_for_status()?.json().await?)
}

/// The document's PDF, as served, read back as text.
async fn pdf_text(api: &TestApi, token: &str, summary: &Value) -> Result<String, Error> {
    let url = summary["pdf_url"].as_str().ok_or("no pdf_url")?;
    let answer = api.http.get(api.url(url)).bearer_auth(token).header("accept", "application/pdf").send().await?;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["content-type"], "application/pdf");
    e2e::pdf_text(&answer.bytes().await?)
}

/// The rupee amount a PDF line `label: 1234.56` prints, in paise.
fn printed_paise(text: &str, label: &str) -> Result<i64, Error> {
    let line =
        text.lines().find(|l| l.trim_start().starts_with(label)).ok_or_else(|| format!("no {label} in {text}"))?;
    let amount = line.rsplit(' ').next().ok_or("no amount")?.trim();
    let (rupees, paise) = amount.split_once('.').ok_or("no decimals")?;
    Ok(rupees.parse::<i64>()? * 100 + paise.parse::<i64>()?)
}

/// The totals the PDF prints add up, and equal the document's JSON.
fn check_printed_totals(text: &str, totals: &Value) -> TestResult {
    let taxable = printed_paise(text, "Total Taxable value:")?;
    let cgst = printed_paise(text, "Total CGST @ 9%:")?;
    let sgst = printed_paise(text, "Total SGST @ 9%:")?;
    let igst = printed_paise(text, "Total IGST @ 18%:")?;
    let total = printed_paise(text, "Total amount:")?;
    assert_eq!(taxable + cgst + sgst + igst, total, "the printed totals add up: {text}");
    let json = [
        &totals["taxable_paise"],
        &totals["cgst_paise"],
        &totals["sgst_paise"],
        &totals["igst_paise"],
        &totals["total_paise"],
    ];
    assert_eq!(json.map(Value::as_i64), [taxable, cgst, sgst, igst, total].map(Some), "PDF and JSON agree");
    Ok(())
}

async fn an_intra_state_top_up_pays_cgst_and_sgst_and_gets_a_receipt_voucher(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("asha@example.in").await?;
    let topup = paid_topup(&api, &token, 100_000).await?;
    assert_eq!(topup["amount_paise"], 100_000, "the credit asked for");
    assert_eq!(
        topup["tax"],
        json!({"taxable_paise": 100_000, "cgst_paise": 9_000, "sgst_paise": 9_000, "igst_paise": 0, "total_paise": 118_000})
    );
    assert_eq!(
        api.ledger_checked_balance(&user).await?,
        1_000 * shared::money::UNITS_PER_RUPEE,
        "the wallet gets the credit"
    );

    let listed = documents(&api, &token).await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let voucher = &listed[0];
    let year = FinancialYear::of(api.clock.now());
    assert_eq!((voucher["kind"].as_str(), voucher["total_paise"].as_i64()), (Some("receipt_voucher"), Some(118_000)));
    let number = format!("RV/{}/000001", year.short());
    assert_eq!(voucher["number"], json!(number));
    let json_url = voucher["json_url"].as_str().ok_or("json_url")?;
    let document: Value =
        api.http.get(api.url(json_url)).bearer_auth(&token).send().await?.error_for_status()?.json().await?;
    assert_eq!(document["supplier"]["gstin"], "29AAICI1234F1ZQ");
    assert_eq!(
        (document["recipient"]["state_code"].as_str(), document["recipient"]["gstin"].as_str()),
        (Some("29"), None)
    );
    assert_eq!(document["place_of_supply"], "29 - Karnataka");
    assert_eq!(document["lines"][0]["sac"], "998315");
    assert_eq!(document["total_in_words"], "Rupees One Thousand One Hundred Eighty Only");
    assert_eq!(
        document["references"]["payment_id"].as_str().map(|p| format!("rv_{p}")),
        voucher["id"].as_str().map(str::to_owned)
    );

    let text = pdf_text(&api, &token, voucher).await?;
    for expected in [
        "RECEIPT VOUCHER",
        number.as_str(),
        "29AAICI1234F1ZQ",
        "SAC 998315",
        "Place of supply: 29 - Karnataka",
        "Rupees One Thousand One Hundred Eighty Only",
        "Tax payable on reverse charge: No",
    ] {
        assert!(text.contains(expected), "the PDF says {expected}: {text}");
    }
    check_printed_totals(&text, &document["totals"])?;
    assert_eq!(printed_paise(&text, "CGST @ 9%:")?, 9_000);

    around_the_voucher(&api, voucher, json_url).await
}

/// Nobody else reads the voucher; the receipt e-mail points to it; it is kept eight financial years after
/// this one; nothing is left due or unnumbered.
async fn around_the_voucher(api: &TestApi, voucher: &Value, json_url: &str) -> TestResult {
    let year = FinancialYear::of(api.clock.now());
    let (_, other) = api.verified_user("other@example.in").await?;
    let theirs = api.http.get(api.url(json_url)).bearer_auth(&other).send().await?;
    e2e::expect_error(theirs, StatusCode::NOT_FOUND, "tax_document_not_found", None).await?;
    let mail = api.last_mail("asha@example.in", "payment_receipt").await?;
    assert!(mail.text.contains("GST on the credit") && mail.text.contains("Tax documents"), "{}", mail.text);
    let dump = api.dump().await?;
    let stored = dump
        .lines()
        .find(|l| l.starts_with(&format!("TAXDOC#{} DOCUMENT", voucher["id"].as_str().unwrap_or_default())))
        .ok_or("stored")?;
    assert!(stored.ends_with(&format!("Some({})", year.after(8).timestamp())), "{stored}");
    assert!(
        !dump.lines().any(|l| l.starts_with("TAXDOCS#DUE") || l.starts_with("TAXDOCS#UNNUMBERED")),
        "nothing left due or unnumbered: {dump}"
    );
    Ok(())
}

async fn an_inter_state_customer_pays_igst(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.verified_user("mumbai@example.in").await?;
    api.set_billing_profile(&token, "27").await?;
    let topup = paid_topup(&api, &token, 50_050).await?;
    // 18% of ₹500.50 is ₹90.09: IGST alone, rounded half up to the paisa.
    assert_eq!(
        topup["tax"],
        json!({"taxable_paise": 50_050, "cgst_paise": 0, "sgst_paise": 0, "igst_paise": 9_009, "total_paise": 59_059})
    );
    let listed = documents(&api, &token).await?;
    let text = pdf_text(&api, &token, &listed[0]).await?;
    assert!(text.contains("Place of supply: 27 - Maharashtra"), "{text}");
    assert_eq!(printed_paise(&text, "IGST @ 18%:")?, 9_009);
    let document = document_json(&api, &token, &listed[0]).await?;
    check_printed_totals(&text, &document["totals"])?;
    assert_eq!(document["total_in_words"], "Rupees Five Hundred Ninety and Fifty Nine Paise Only");
    Ok(())
}

async fn a_business_voucher_carries_its_verified_gstin(backend: Backend) -> TestResult {
    let api = TestApi::start(backend).await?;
    let (_, token) = api.signed_in("proprietor@example.in").await?;
    let gstin = "29ABCPE1231F1ZA";
    let body = json!({"gstin": gstin, "pan": "ABCPE1231F", "name_on_pan": "Asha Rao", "consent": true});
    let kyc: Value = api.submit_kyc_body(&token, &body).await?.error_for_status()?.json().await?;
    assert_eq!(kyc["status"], "verified", "{kyc}");
    let profile = api.set_billing_profile(&token, "29").await?;
    assert_eq!(profile["gstin"], gstin, "filled in from the KYC");
    paid_topup(&api, &token, 20_000).await?;
    let listed = documents(&api, &token).await?;
    let document = document_json(&api, &token, &listed[0]).await?;
    assert_eq!(document["recipient"]["gstin"], gstin);
    let legal_name = document["recipient"]["legal_name"].as_str().ok_or("the legal name GSTN holds")?;
    let text = pdf_text(&api, &token, &listed[0]).await?;
    assert!(text.contains(&format!("GSTIN: {gstin}")) && text.contains(legal_name), "{text}");
    check_printed_totals(&text, &document["totals"])?;
    Ok(())
}

/// Two hundred payments' vouchers issued at once (each as the webhook does after its credit), then one left
/// due by a process that stopped: every number of the series from 1 up is given once, none is skipped.
async fn hundreds_of_vouchers_issued_at_once_are_numbered_without_gaps(backend: Backend) -> TestResult {
    const COUNT: usize = 200;
    let api = Arc::new(TestApi::start(backend).await?);
    let (user, token) = api.verified_user("many@example.in").await?;
    let profile = api.set_billing_profile(&token, "29").await?;
    let recipient = Party {
        name: profile["billing_name"].as_str().unwrap_or_default().into(),
        legal_name: None,
        address: profile["address"].as_str().unwrap_or_default().into(),
        state_code: "29".into(),
        state: "Karnataka".into(),
        pin: Some("560001".into()),
        gstin: None,
    };
    let ports = api.state.ports.clone();
    let mut payments = due_markers(&api, &user, recipient, COUNT + 1).await?;
    let stopped = payments.pop().ok_or("one left due")?;
    let mut tasks = Vec::new();
    for payment_id in payments {
        let ports = ports.clone();
        tasks.push(shared::tasks::spawn("test", async move { issue_receipt(&ports, &payment_id).await }));
    }
    for task in tasks {
        task.await??;
    }
    // The process that credited the last payment stopped before its voucher: the jobs issue it.
    assert!(api.dump().await?.contains(&format!("TAXDOCS#DUE rv_{stopped}")), "left due");
    issue_due(&ports).await?;
    let mut numbers = all_numbers(&api, &token).await?;
    numbers.sort();
    let year = FinancialYear::of(api.clock.now()).short();
    let expected: Vec<String> = (1..=COUNT + 1).map(|n| format!("RV/{year}/{n:06}")).collect();
    assert_eq!(numbers, expected, "one voucher per payment, numbered 1 to {} with no gap", COUNT + 1);
    assert!(numbers.iter().all(|n| n.len() <= 16));
    assert!(
        !api.dump().await?.lines().any(|l| l.starts_with("TAXDOCS#DUE") || l.starts_with("TAXDOCS#UNNUMBERED")),
        "nothing left due or unnumbered"
    );
    Ok(())
}

/// `count` credited payments' due markers, as their credits write them; returns the payment ids.
async fn due_markers(api: &TestApi, user: &str, recipient: Party, count: usize) -> Result<Vec<String>, Error> {
    let ports = &api.state.ports;
    let class = shared::retention::ItemClass::ReceiptDue;
    let expires_at = ports.config().retention.expiry(class, ports.now()).ok_or("window")?;
    let mut payments = Vec::new();
    for n in 0..count {
        let advance = AdvanceReceived {
            user_id: user.to_owned(),
            payment_id: format!("pay_Race{n:010}"),
            topup_id: format!("tup_race{n}"),
            received_at: ports.now(),
            tax: TaxSplit::on(10_000, true),
            recipient: recipient.clone(),
        };
        let payment_id = advance.payment_id.clone();
        api.state.store.transact(vec![due_put(&DueDocument::ReceiptVoucher(advance), expires_at)?]).await?;
        payments.push(payment_id);
    }
    Ok(payments)
}

/// Every document number the account's list shows, page by page.
async fn all_numbers(api: &TestApi, token: &str) -> Result<Vec<String>, Error> {
    let mut numbers = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = cursor.as_deref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let url = api.url(&format!("/v1/tax-documents?limit=100{query}"));
        let page: Value = api.http.get(url).bearer_auth(token).send().await?.error_for_status()?.json().await?;
        let listed = page["data"].as_array().into_iter().flatten();
        numbers.extend(listed.filter_map(|d| d["number"].as_str().map(str::to_owned)));
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            return Ok(numbers);
        }
    }
}

/// ₹1,000 of credit paid ₹1,180. A refund of ₹590.01 takes its share of the credit rounded up (₹500.01); a
/// lost chargeback of the ₹589.99 left takes all the credit left (₹499.99), not its own rounded share: the
/// wallet keeps nothing of a payment whose money all went back, and nothing more can be taken.
async fn parts_of_a_taxed_payment_taken_back_take_back_all_its_credit(backend: Backend) -> TestResult {
    use shared::money::UNITS_PER_PAISA;
    let api = TestApi::start(backend).await?;
    let (user, token) = api.verified_user("partial@example.in").await?;
    let (_, payment) = paid_topup_and_payment(&api, &token, 100_000).await?;
    assert_eq!(payment.amount, 118_000);
    api.razorpay.deliver(&api.razorpay.refund_webhook(&payment, 59_001)).await.ok_or("delivery")?;
    assert_eq!(api.ledger_checked_balance(&user).await?, 49_999 * UNITS_PER_PAISA);
    for event in ["payment.dispute.created", "payment.dispute.lost"] {
        let dispute = api.razorpay.dispute_webhook(&payment, "disp_TheRest00001", event, 58_999);
        assert_eq!(api.razorpay.deliver(&dispute).await, Some(200), "{event}");
    }
    assert_eq!(api.ledger_checked_balance(&user).await?, 0, "all the money went back, so all the credit did");
    let (status, body) = {
        let refund = api.razorpay.refund_webhook(&payment, 1);
        let answer = api.razorpay.deliver(&refund).await;
        (answer, api.dump().await?)
    };
    assert_eq!(status, Some(200));
    assert!(body.contains("more than the payment"), "a paisa more goes to review: {body}");
    assert_eq!(api.ledger_checked_balance(&user).await?, 0);
    Ok(())
}
