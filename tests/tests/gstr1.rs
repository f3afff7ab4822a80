//! The accountant's GSTR-1 files, on both stores, checked against the documents they sum: advances received
//! in one month; the next month's invoices to a business (B2B, with its GSTIN) and to consumers in and out
//! of the supplier's state (B2C by state), the advances set against them and one refunded at a closure, the
//! SAC summary and the document number ranges; each as the portal's JSON and as CSV.

use chrono::Duration;
use e2e::{Backend, TestApi, TestResult, on_both_stores};
use reqwest::StatusCode;
use serde_json::{Value, json};
use shared::clock::{Clock, FinancialYear};
use shared::gst::invoices::InvoiceMonth;
use shared::money::UNITS_PER_PAISA;
use shared::secrets::SecretString;
use shared::wallet::metering::{self, BalanceHints};

on_both_stores!(a_months_gstr1_sums_its_documents);

type Error = Box<dyn std::error::Error + Send + Sync>;
const OPERATOR: &str = "ops-token-meera";
const PASSWORD: &str = "correct horse battery";

/// One settled call costing `rupees`, as the gateway charges it.
async fn spend(api: &TestApi, user: &str, rupees: i64) -> TestResult {
    let id = format!("req_{}", shared::secrets::random_suffix());
    let call = metering::HeldCall {
        request_id: id.clone(),
        key_id: "key_gstr1".into(),
        model: "llama-3.1-8b".into(),
        prompt_tokens: 1_000,
        completion_tokens: 500,
    };
    let cost = rupees * 100 * UNITS_PER_PAISA;
    let hints = BalanceHints::default();
    let hold = metering::place_call_hold(&api.state.ports, &hints, user, cost, &call).await?;
    let far = api.clock.now_epoch() + 365 * 86_400;
    let settlement = metering::Settlement {
        cost,
        usage: e2e::usage_record(&id, (1_000, 500), api.clock.now()),
        expiries: metering::Expiries { usage: far, ledger: far },
        deadline: std::time::Instant::now() + std::time::Duration::from_secs(30),
    };
    metering::settle(api.state.store.as_ref(), &hints, &hold, settlement).await?;
    Ok(())
}

async fn gstr1(api: &TestApi, month: InvoiceMonth) -> Result<Value, Error> {
    let url = api.url(&format!("/v1/admin/gstr1/{}", month.id()));
    let session = api.operator_session(OPERATOR).await?;
    Ok(api.http.get(url).bearer_auth(session).send().await?.error_for_status()?.json().await?)
}

async fn csv(api: &TestApi, month: InvoiceMonth, section: &str) -> Result<(StatusCode, String), Error> {
    let url = api.url(&format!("/v1/admin/gstr1/{}/csv/{section}", month.id()));
    let answer = api.http.get(url).bearer_auth(api.operator_session(OPERATOR).await?).send().await?;
    Ok((answer.status(), answer.text().await?))
}

/// A business (a proprietor's GSTIN in Karnataka) verified, billed and funded.
async fn business(api: &TestApi, rupees: i64) -> Result<(String, String), Error> {
    let (user, token) = api.signed_in("firm@example.in").await?;
    let body = json!({"gstin": "29ABCPE1231F1ZA", "pan": "ABCPE1231F", "name_on_pan": "Asha Rao", "consent": true});
    api.submit_kyc_body(&token, &body).await?.error_for_status()?;
    api.set_billing_profile(&token, "29").await?;
    api.fund(&token, rupees).await?;
    Ok((user, token))
}

async fn a_months_gstr1_sums_its_documents(backend: Backend) -> TestResult {
    let config = shared::config::Config {
        admin_token: Some(SecretString::new(e2e::operators_secret(&[(
            "meera.ops@inferexai.in",
            OPERATOR,
            &["payments"],
        )]))),
        ..Default::default()
    };
    let api = TestApi::start_with(backend, config).await?;
    // December: three advances. A consumer in Karnataka (the supplier's state), one in Maharashtra, a business.
    let (asha, asha_token) = api.verified_user("asha@example.in").await?;
    api.fund(&asha_token, 1_000).await?;
    let (ravi, ravi_token) = api.verified_user("ravi@example.in").await?;
    api.set_billing_profile(&ravi_token, "27").await?;
    api.fund(&ravi_token, 500).await?;
    let (firm, _) = business(&api, 200).await?;
    for (user, rupees) in [(&asha, 100), (&ravi, 50), (&firm, 20)] {
        spend(&api, user, rupees).await?;
    }
    let december = InvoiceMonth::of(api.clock.now());
    december_advances(&api, december).await?;
    let january = supply_and_a_refund(&api, december).await?;
    january_supply(&api, january, &firm).await?;
    january_sheets(&api, january, &asha_token).await
}

/// December's return: the three advances received, and their receipt vouchers' numbers.
async fn december_advances(api: &TestApi, december: InvoiceMonth) -> TestResult {
    let advances = gstr1(api, december).await?;
    assert_eq!(advances["fp"], json!(format!("{:02}{}", december.month, december.year)));
    assert_eq!(advances["gstin"], "29AAICI1234F1ZQ");
    assert_eq!(
        advances["at"],
        json!([
            {"pos": "27", "sply_ty": "INTER", "itms": [{"rt": 18, "ad_amt": 500.0, "iamt": 90.0, "camt": 0.0, "samt": 0.0, "csamt": 0.0}]},
            {"pos": "29", "sply_ty": "INTRA", "itms": [{"rt": 18, "ad_amt": 1200.0, "iamt": 0.0, "camt": 108.0, "samt": 108.0, "csamt": 0.0}]},
        ])
    );
    let year = FinancialYear::of(api.clock.now()).short();
    let receipts = json!([{"doc_num": 6, "docs": [{"num": 1, "from": format!("RV/{year}/000001"), "to": format!("RV/{year}/000003"), "totnum": 3, "cancel": 0, "net_issue": 3}]}]);
    assert_eq!(advances["doc_issue"]["doc_det"], receipts);
    assert_eq!((advances["b2b"].clone(), advances["b2cs"].clone()), (json!([]), json!([])), "no supply yet");
    assert_eq!(advances["hsn"], json!({"hsn_b2b": [], "hsn_b2c": []}), "no SAC rows without invoices");
    Ok(())
}

/// January: the jobs invoice December; then Ravi closes his account and ₹450 goes back with its IGST.
async fn supply_and_a_refund(api: &TestApi, december: InvoiceMonth) -> Result<InvoiceMonth, Error> {
    api.clock.advance(december.ends() + Duration::hours(9) - api.clock.now());
    assert_eq!(jobs::run(&api.state).await?.tax_invoices_issued, 3);
    let login = api.login("ravi@example.in", PASSWORD).await?.error_for_status()?.json::<Value>().await?;
    let token = login["token"].as_str().ok_or("no token")?;
    let close = api.http.delete(api.url("/v1/account")).bearer_auth(token).json(&json!({ "password": PASSWORD }));
    close.send().await?.error_for_status()?;
    jobs::run(&api.state).await?;
    assert_eq!(api.razorpay.process_refunds().await, 1);
    Ok(InvoiceMonth::of(api.clock.now()))
}

/// January's return: the business's invoice, the consumers' by state, the advances out, SAC and numbers.
async fn january_supply(api: &TestApi, january: InvoiceMonth, firm: &str) -> TestResult {
    let year = FinancialYear::of(api.clock.now()).short();
    let supply = gstr1(api, january).await?;
    let firm_invoice = invoice_of(api, firm).await?;
    assert_eq!(
        supply["b2b"],
        json!([{"ctin": "29ABCPE1231F1ZA", "inv": [{
            "inum": firm_invoice["number"], "idt": invoice_date(&firm_invoice)?, "val": 23.6, "pos": "29", "rchrg": "N", "inv_typ": "R",
            "itms": [{"num": 1, "itm_det": {"txval": 20.0, "rt": 18, "iamt": 0.0, "camt": 1.8, "samt": 1.8, "csamt": 0.0}}]}]}])
    );
    assert_eq!(supply["b2cl"], json!([]), "no consumer's invoice above ₹1,00,000");
    assert_eq!(
        supply["b2cs"],
        json!([
            {"sply_ty": "INTER", "pos": "27", "typ": "OE", "rt": 18, "txval": 50.0, "iamt": 9.0, "camt": 0.0, "samt": 0.0, "csamt": 0.0},
            {"sply_ty": "INTRA", "pos": "29", "typ": "OE", "rt": 18, "txval": 100.0, "iamt": 0.0, "camt": 9.0, "samt": 9.0, "csamt": 0.0},
        ])
    );
    // Advances out: set against the invoices (₹50 in Maharashtra, ₹120 in Karnataka) and refunded (₹450).
    assert_eq!(
        supply["txpd"],
        json!([
            {"pos": "27", "sply_ty": "INTER", "itms": [{"rt": 18, "ad_amt": 500.0, "iamt": 90.0, "camt": 0.0, "samt": 0.0, "csamt": 0.0}]},
            {"pos": "29", "sply_ty": "INTRA", "itms": [{"rt": 18, "ad_amt": 120.0, "iamt": 0.0, "camt": 10.8, "samt": 10.8, "csamt": 0.0}]},
        ])
    );
    assert_eq!(supply["hsn"]["hsn_b2b"][0]["txval"], json!(20.0));
    assert_eq!(supply["hsn"]["hsn_b2c"][0]["txval"], json!(150.0));
    assert_eq!(supply["hsn"]["hsn_b2c"][0]["hsn_sc"], "998315");
    let ranges: Vec<(Value, Value, Value)> = supply["doc_issue"]["doc_det"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| (d["doc_num"].clone(), d["docs"][0]["from"].clone(), d["docs"][0]["totnum"].clone()))
        .collect();
    assert_eq!(
        ranges,
        [
            (json!(1), json!(format!("TI/{year}/000001")), json!(3)),
            (json!(8), json!(format!("RF/{year}/000001")), json!(1))
        ]
    );

    Ok(())
}

/// January's sheets as CSV, and the requests refused.
async fn january_sheets(api: &TestApi, january: InvoiceMonth, customer_token: &str) -> TestResult {
    let (status, b2b) = csv(api, january, "b2b").await?;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = b2b.lines().collect();
    assert!(lines[0].starts_with("GSTIN/UIN of Recipient,Receiver Name,Invoice Number"), "{b2b}");
    assert_eq!(lines.len(), 2, "{b2b}");
    assert!(
        lines[1].starts_with("29ABCPE1231F1ZA,") && lines[1].contains(",29-Karnataka,N,,Regular B2B,,18.00,20.00,0.00"),
        "{b2b}"
    );
    let (_, hsn) = csv(api, january, "hsn").await?;
    assert_eq!(
        hsn.lines().skip(1).map(|l| l.split(',').nth(6).unwrap_or_default().to_owned()).collect::<Vec<_>>(),
        ["20.00", "150.00"]
    );
    let (status, _) = csv(api, january, "nope").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let bad = api
        .http
        .get(api.url("/v1/admin/gstr1/2026-13"))
        .bearer_auth(api.operator_session(OPERATOR).await?)
        .send()
        .await?;
    e2e::expect_error(bad, StatusCode::BAD_REQUEST, "invalid_period", Some("period")).await?;
    let customer =
        api.http.get(api.url(&format!("/v1/admin/gstr1/{}", january.id()))).bearer_auth(customer_token).send().await?;
    assert!(!customer.status().is_success(), "operators only");
    Ok(())
}

/// The account's tax invoice, as the documents hold it.
async fn invoice_of(api: &TestApi, user: &str) -> Result<Value, Error> {
    let documents = shared::gst::documents::documents_of(api.state.store.as_ref(), user).await?;
    let invoice =
        documents.into_iter().find(|d| d.kind == shared::gst::DocumentKind::TaxInvoice).ok_or("no invoice")?;
    Ok(serde_json::to_value(invoice)?)
}

fn invoice_date(invoice: &Value) -> Result<String, Error> {
    let issued: chrono::DateTime<chrono::Utc> = serde_json::from_value(invoice["issued_at"].clone())?;
    Ok((issued + shared::clock::IST_OFFSET).format("%d-%m-%Y").to_string())
}
