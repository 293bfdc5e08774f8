//! Payments over HTTP: WeChat Pay callbacks, the patient's and guest's pay
//! page (`/p/pay/{token}`, a signed expiring link), and the payments of an
//! instance for staff.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use serde_json::json;

use crate::domain::Money;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::runtime::CallbackRefused;
use crate::runtime::{PageError, PayView};
use crate::store::{from_ms, MerchantRow, PaymentRow, RefundRow};

/// `POST /callbacks/wechatpay/{merchant}`: verified, checked, persisted
/// and applied to the payment, then 204; the flow moves after the answer.
/// Anything refused
/// gets 4xx/5xx with `{"code":"FAIL","message":…}`, never 200.
pub async fn callback(
    state: web::Data<AppState>,
    merchant: web::Path<i64>,
    request: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match state
        .runtime
        .wechat_callback(*merchant, &header, &body)
        .await
    {
        Ok(stored) => {
            // Applying it is one short transaction (the payment's new state
            // and the event owed to the flow); the flow itself moves after
            // the answer, through the outbox. If this fails, the sweep
            // applies the stored notification later.
            if let Some(notification) = stored {
                if let Err(error) = state.runtime.process_notification(&notification).await {
                    tracing::warn!(
                        "notification {} left for the sweep: {error}",
                        notification.id
                    );
                }
            }
            HttpResponse::NoContent().finish()
        }
        Err(refused) => {
            let status = match &refused {
                CallbackRefused::Unverified(_) => StatusCode::UNAUTHORIZED,
                CallbackRefused::Malformed(_) => StatusCode::BAD_REQUEST,
                CallbackRefused::Unknown(_) => StatusCode::NOT_FOUND,
                CallbackRefused::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            HttpResponse::build(status)
                .json(json!({"code": "FAIL", "message": refused.to_string()}))
        }
    }
}

fn page_error(error: PageError) -> ApiError {
    match error {
        PageError::BadLink => ApiError::not_found("bad_link", error.to_string()),
        PageError::NotPayable(_) => {
            ApiError::new(StatusCode::CONFLICT, "not_payable", error.to_string())
        }
        PageError::NotSandbox => {
            ApiError::new(StatusCode::CONFLICT, "not_sandbox", error.to_string())
        }
        PageError::Preparing => ApiError::new(
            StatusCode::CONFLICT,
            "not_payable",
            "the payment is being prepared; try again in a moment",
        ),
        PageError::Runtime(error) => error.into(),
    }
}

fn yuan(fen: i64) -> String {
    Money::from_fen(fen).to_yuan_string()
}

/// The bill as the page shows it: every amount in yuan.
fn bill_for_page(view: &PayView) -> Option<serde_json::Value> {
    let bill = view.bill.as_ref()?;
    let items: Vec<_> = bill
        .bill
        .items
        .iter()
        .map(|i| json!({"name": i.name, "quantity": i.quantity, "yuan": yuan(i.amount * i.quantity)}))
        .collect();
    let adjust = |list: &[crate::domain::Adjustment]| -> Vec<serde_json::Value> {
        list.iter()
            .map(|a| json!({"type": a.kind, "yuan": yuan(a.amount)}))
            .collect()
    };
    Some(json!({
        "items": items,
        "total": yuan(bill.total),
        "pooled_fund": yuan(bill.split.pooled_fund),
        "personal_account": yuan(bill.split.personal_account),
        "other_funds": yuan(bill.split.other_funds),
        "self_pay": yuan(bill.split.self_pay),
        "add": adjust(&bill.bill.add),
        "reduce": adjust(&bill.bill.reduce),
    }))
}

const PAY_PAGE: &str = include_str!("../pages/pay.html.tera");

/// A pay link opened before its order exists: no button that cannot work;
/// the page asks again every second and shows the order once it is open.
const PREPARING_PAGE: &str = r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>正在准备支付 Preparing your payment</title></head><body><main style="font-family: sans-serif; max-width: 28rem; margin: 2rem auto; padding: 1rem"><p id="state" data-state="preparing">正在准备支付… Preparing your payment…</p></main><script>(function () { var base = location.pathname.replace(/\/$/, ""); setInterval(function () { fetch(base + "/status").then(function (r) { return r.json(); }).then(function (v) { if (v.state && v.state !== "preparing" && v.state !== "creating") { location.reload(); } }).catch(function () {}); }, 1000); })();</script></body></html>"#;

/// `GET /p/pay/{token}`: what is paid for, the insurance split, the amount
/// due, and the way to pay (sandbox buttons, JSAPI inside WeChat, or a QR).
pub async fn page(state: web::Data<AppState>, token: web::Path<String>) -> HttpResponse {
    let view = match state.runtime.pay_view(&token).await {
        Ok(view) => view,
        Err(PageError::BadLink) => {
            return HttpResponse::NotFound()
                .content_type("text/html; charset=utf-8")
                .body("<!doctype html><meta charset=utf-8><title>Link expired</title><p>此链接无效或已过期 This link is not valid or has expired.</p>")
        }
        Err(PageError::Preparing) => {
            return HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .insert_header(("Cache-Control", "no-store"))
                .body(PREPARING_PAGE)
        }
        Err(error) => return actix_web::ResponseError::error_response(&page_error(error)),
    };
    let mut context = tera::Context::new();
    context.insert("view", &view);
    context.insert("bill", &bill_for_page(&view));
    context.insert("token", token.as_str());
    context.insert(
        "jsapi_json",
        &serde_json::to_string(&view.jsapi).unwrap_or_else(|_| "null".into()),
    );
    context.insert(
        "med_ins_json",
        &serde_json::to_string(&view.med_ins).unwrap_or_else(|_| "null".into()),
    );
    match tera::Tera::one_off(PAY_PAGE, &context, true) {
        Ok(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("Cache-Control", "no-store"))
            .body(html),
        Err(error) => actix_web::ResponseError::error_response(&ApiError::internal(&error)),
    }
}

/// `GET /p/pay/{token}/status`: the payment as the page polls it.
pub async fn status(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = match state.runtime.pay_view(&token).await {
        Ok(view) => serde_json::to_value(view).map_err(|e| ApiError::internal(&e))?,
        Err(PageError::Preparing) => serde_json::json!({"state": "preparing"}),
        Err(error) => return Err(page_error(error)),
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(view))
}

/// `POST /p/pay/{token}/sandbox/pay`: the sandbox pays, through the callback's path.
pub async fn sandbox_pay(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .runtime
        .sandbox_pay(&token)
        .await
        .map_err(page_error)?;
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /p/pay/{token}/sandbox/cancel`: the payer declines.
pub async fn sandbox_cancel(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state
        .runtime
        .sandbox_decline(&token)
        .await
        .map_err(page_error)?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /p/pay/{token}/qr.svg`: the Native order's `code_url` as a QR code.
pub async fn qr(
    state: web::Data<AppState>,
    token: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let view = state.runtime.pay_view(&token).await.map_err(page_error)?;
    let code_url = view.code_url.ok_or_else(|| {
        ApiError::not_found(
            "no_code_url",
            "this payment has no QR code (not a Native order)",
        )
    })?;
    let code = qrcode::QrCode::new(code_url.as_bytes()).map_err(|e| ApiError::internal(&e))?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .build();
    Ok(HttpResponse::Ok().content_type("image/svg+xml").body(svg))
}

#[derive(Debug, Serialize)]
pub struct Refund {
    pub refund: String,
    pub amount: String,
    pub status: crate::store::RefundStatus,
    pub reason: Option<String>,
    pub refund_id: Option<String>,
    pub automatic: bool,
    /// The 医保 part refunded through the insurance bureau, in yuan by fund.
    pub insurance: Option<serde_json::Value>,
    /// When WeChat Pay accepted the report of that part.
    pub insurance_reported_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Serialize)]
pub struct Payment {
    pub payment: String,
    pub state: crate::store::PaymentState,
    pub provider: &'static str,
    pub scene: String,
    pub description: String,
    pub amount: String,
    pub refunded: String,
    pub payer_id: String,
    pub transaction_id: Option<String>,
    /// A 医保 mixed order's number and its last `mix_pay_status`.
    pub mix_trade_no: Option<String>,
    pub mix_pay_status: Option<String>,
    /// Paid after the flow had moved on: refunded automatically.
    pub late: bool,
    pub last_error: Option<String>,
    pub bill: Option<serde_json::Value>,
    pub expires_at: String,
    pub paid_at: Option<String>,
    pub created_at: String,
    pub refunds: Vec<Refund>,
}

fn time(ms: i64) -> String {
    from_ms(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn payment_dto(row: &PaymentRow, refunds: &[RefundRow]) -> Payment {
    Payment {
        payment: row.out_trade_no.clone(),
        state: row.state,
        provider: if row.merchant_id.is_some() {
            "wechat"
        } else {
            "sandbox"
        },
        scene: row.scene.clone(),
        description: row.description.clone(),
        amount: yuan(row.amount_fen),
        refunded: yuan(row.refunded_fen),
        payer_id: row.payer_id.clone(),
        transaction_id: row.transaction_id.clone(),
        mix_trade_no: row.mix_trade_no.clone(),
        mix_pay_status: row.mix_pay_status.clone(),
        late: row.late,
        last_error: row.last_error.clone(),
        bill: row
            .bill
            .as_deref()
            .and_then(|b| serde_json::from_str::<crate::domain::CheckedBill>(b).ok())
            .and_then(|b| serde_json::to_value(b.masked()).ok()),
        expires_at: time(row.expires_at_ms),
        paid_at: row.paid_at_ms.map(time),
        created_at: time(row.created_at_ms),
        refunds: refunds
            .iter()
            .map(|r| Refund {
                refund: r.out_refund_no.clone(),
                amount: yuan(r.amount_fen),
                status: r.status,
                reason: r.reason.clone(),
                refund_id: r.refund_id.clone(),
                automatic: r.automatic,
                insurance: r
                    .insurance
                    .as_deref()
                    .and_then(|i| serde_json::from_str::<crate::engine::InsuranceRefund>(i).ok())
                    .map(|i| {
                        json!({
                            "pooled_fund": yuan(i.pooled_fund),
                            "personal_account": yuan(i.personal_account),
                            "other_funds": yuan(i.other_funds),
                        })
                    }),
                insurance_reported_at: r.insurance_notified_at_ms.map(time),
                created_at: time(r.created_at_ms),
            })
            .collect(),
    }
}

/// `GET /api/v1/instances/{id}/payments`: the instance's payments and their refunds.
pub async fn of_instance(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let payments = state
        .reads
        .payments_of(&caller.tenant_id, &id)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| {
            ApiError::not_found("instance_not_found", format!("there is no instance `{id}`"))
        })?;
    let out: Vec<_> = payments
        .iter()
        .map(|(payment, refunds)| payment_dto(payment, refunds))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"payments": out})))
}

#[derive(Debug, Serialize)]
pub struct Merchant {
    pub id: i64,
    pub branch: Option<String>,
    pub mchid: String,
    pub appid: String,
    pub serial_no: String,
    pub public_key_id: Option<String>,
    pub platform_certificates: bool,
    pub notify_url: Option<String>,
    pub base_url: String,
}

impl From<&MerchantRow> for Merchant {
    /// Never the secrets, nor where they are kept.
    fn from(row: &MerchantRow) -> Merchant {
        Merchant {
            id: row.id,
            branch: (!row.branch_id.is_empty()).then(|| row.branch_id.clone()),
            mchid: row.mchid.clone(),
            appid: row.appid.clone(),
            serial_no: row.serial_no.clone(),
            public_key_id: row.public_key_id.clone(),
            platform_certificates: row.platform_certificates,
            notify_url: row.notify_url.clone(),
            base_url: row.base_url.clone(),
        }
    }
}

/// `GET /api/v1/merchants` (admin): the tenant's WeChat Pay merchants, without secrets.
pub async fn merchants(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(&["admin"])?;
    let rows = state
        .reads
        .merchants(&caller.tenant_id)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let merchants: Vec<Merchant> = rows.iter().map(Merchant::from).collect();
    Ok(HttpResponse::Ok().json(json!({"merchants": merchants})))
}
