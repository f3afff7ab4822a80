//! The inference function: OpenAI-compatible `/v1/models` (and one model), `/v1/chat/completions`,
//! `/v1/completions` and `/v1/embeddings`, authenticated by API key, streamed or not; OpenAI endpoints we do
//! not serve answer `unsupported_endpoint`. These routes, and only these, answer browsers on any origin (CORS,
//! never with credentials: the key is the credential). Billing, routing and usage live in `shared::inference`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use shared::error::{ApiError, ApiResult, ErrorCode};
use shared::http::{JsonBody, ListPage};
use shared::inference::{self, Answer, Endpoint, MAX_INFERENCE_BODY_BYTES};
use shared::ports::Ports;
use shared::residency::{DataResidency, RESIDENCY_HEADER};
use shared::secrets::random_suffix;
use shared::state::AppState;

/// OpenAI endpoints clients call that we do not serve: each answers 404 `unsupported_endpoint` naming ours.
pub const UNSUPPORTED: [&str; 5] =
    ["/v1/responses", "/v1/images/generations", "/v1/audio/speech", "/v1/audio/transcriptions", "/v1/moderations"];

/// What we serve, as `unsupported_endpoint` lists it.
const SUPPORTED: &str =
    "GET /v1/models, GET /v1/models/{model}, POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings";

pub fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/v1/models", get(models).options(options))
        .route("/v1/models/{model_id}", get(model).options(options))
        .route("/v1/chat/completions", post(chat_completions).options(options))
        .route("/v1/completions", post(completions).options(options))
        .route("/v1/embeddings", post(embeddings).options(options));
    for path in UNSUPPORTED {
        router = router.route(path, post(unsupported));
    }
    router.layer(cors())
}

/// An `OPTIONS` that is not a CORS preflight (those the CORS layer answers before any route): the methods.
async fn options() -> Response {
    let mut response = StatusCode::OK.into_response();
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST, OPTIONS"));
    response
}

/// Browser apps on any origin may call with an API key: preflights are answered, every answer (errors too)
/// carries `Access-Control-Allow-Origin: *`, and credentials (cookies) are never allowed, so the session routes
/// stay same-origin. Whatever headers a preflight names are allowed (the SDKs send `authorization`,
/// `content-type`, `x-stainless-*` and `openai-*`): with no credentials, a header grants nothing.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{HeaderName, Method};
    use tower_http::cors::{AllowHeaders, CorsLayer, ExposeHeaders};
    CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(ExposeHeaders::list(
            [
                "x-request-id",
                "x-inferex-cost-inr",
                "x-inferex-provider",
                "x-inferex-country",
                "retry-after",
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ]
            .map(HeaderName::from_static),
        ))
        .max_age(std::time::Duration::from_secs(600))
}

pub fn app(state: AppState) -> Router {
    shared::http::finish(routes(), state)
}

/// A call's answer: the JSON body with its cost, or the stream of events; either says who served it.
fn answer_response(answer: Answer) -> Response {
    match answer {
        Answer::Complete(done) => {
            let status = StatusCode::from_u16(done.status).unwrap_or(StatusCode::OK);
            let mut response = (status, Json(done.body)).into_response();
            if let Ok(cost) = HeaderValue::from_str(&shared::money::format_inr(done.cost)) {
                response.headers_mut().insert("x-inferex-cost-inr", cost);
            }
            with_served(response, &done.served)
        }
        Answer::Stream(streamed) => {
            let events = streamed.events;
            let stream = futures_util::stream::unfold(events, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
            let mut response = Response::new(Body::from_stream(stream));
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            with_served(response, &streamed.served)
        }
    }
}

/// `x-inferex-provider` and `x-inferex-country`: where the call ran.
fn with_served(mut response: Response, served: &inference::ServedBy) -> Response {
    for (name, value) in [("x-inferex-provider", &served.provider), ("x-inferex-country", &served.country)] {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// OpenAI's `x-ratelimit-*` headers, for a key with rate limits.
fn with_rate_headers(mut response: Response, window: Option<&shared::keys::RateWindow>) -> Response {
    for (name, value) in window.map(shared::keys::RateWindow::headers).unwrap_or_default() {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Every inference response, error or not, carries the request id that the usage log records.
fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// A model in OpenAI's shape, with its context, output cap, INR prices and where its routes run.
fn model_view(catalog: &shared::catalog::Catalog, m: &shared::catalog::Model) -> Value {
    let providers: Vec<Value> = catalog
        .sites_of(m)
        .into_iter()
        .map(|(name, site)| json!({ "name": name, "country": site.country, "region": site.region }))
        .collect();
    json!({
        "id": m.id,
        "object": "model",
        "created": 0,
        "owned_by": m.routes.first().map(|r| r.provider.as_str()).unwrap_or("inferex"),
        "context_length": m.context_length,
        "max_output_tokens": m.max_output_tokens,
        "pricing": {
            "currency": "INR",
            "input_paise_per_million_tokens": m.input_paise_per_million,
            "output_paise_per_million_tokens": m.output_paise_per_million,
        },
        "providers": providers,
    })
}

async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let request_id = format!("req_{}", random_suffix());
    let result: ApiResult<Json<ListPage<Value>>> = async {
        let gateway = state.gateway()?;
        let owner = gateway.authenticate(&Ports::from(&state), shared::http::bearer_token(&headers)).await?;
        // A key limited to some models lists only those.
        let catalog = &gateway.catalog;
        let data: Vec<Value> =
            catalog.models.iter().filter(|m| owner.allows(&m.id)).map(|m| model_view(catalog, m)).collect();
        Ok(Json(ListPage::all(data)))
    }
    .await;
    with_request_id(result.into_response(), &request_id)
}

/// `GET /v1/models/{model}`: one model, as the list shows it; 404 `model_not_found` for an id we do not serve.
async fn model(State(state): State<AppState>, headers: HeaderMap, Path(model_id): Path<String>) -> Response {
    let request_id = format!("req_{}", random_suffix());
    let result: ApiResult<Json<Value>> = async {
        let gateway = state.gateway()?;
        let owner = gateway.authenticate(&Ports::from(&state), shared::http::bearer_token(&headers)).await?;
        let served = |m: &&shared::catalog::Model| m.id == model_id && owner.allows(&m.id);
        let model = gateway.catalog.models.iter().find(served).ok_or_else(|| ApiError::NotFound {
            code: ErrorCode::ModelNotFound,
            message: format!("The model `{model_id}` does not exist or you do not have access to it."),
        })?;
        Ok(Json(model_view(&gateway.catalog, model)))
    }
    .await;
    with_request_id(result.into_response(), &request_id)
}

/// `POST /v1/embeddings`: no provider we route to serves an embedding model yet, so after the key is checked
/// every request answers 404 `model_not_found` saying so (OpenAI's answer for a model it does not have), and
/// no money moves.
async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<Value, MAX_INFERENCE_BODY_BYTES>, ApiError>,
) -> Response {
    let request_id = format!("req_{}", random_suffix());
    let result: ApiResult<Response> = async {
        let gateway = state.gateway()?;
        gateway.authenticate(&Ports::from(&state), shared::http::bearer_token(&headers)).await?;
        let JsonBody(_) = body?;
        Err(ApiError::NotFound {
            code: ErrorCode::ModelNotFound,
            message: "No embedding model is available: InferexAI serves chat and completion models (GET /v1/models)."
                .into(),
        })
    }
    .await;
    with_request_id(result.into_response(), &request_id)
}

/// An OpenAI endpoint we do not serve: 404 `unsupported_endpoint`, naming the ones we do.
async fn unsupported(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound {
        code: ErrorCode::UnsupportedEndpoint,
        message: format!("POST {} is not supported by InferexAI; supported: {SUPPORTED}", uri.path()),
    }
}

async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<Value, MAX_INFERENCE_BODY_BYTES>, ApiError>,
) -> Response {
    serve(state, headers, body, Endpoint::ChatCompletions).await
}

async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonBody<Value, MAX_INFERENCE_BODY_BYTES>, ApiError>,
) -> Response {
    serve(state, headers, body, Endpoint::Completions).await
}

async fn serve(
    state: AppState,
    headers: HeaderMap,
    body: Result<JsonBody<Value, MAX_INFERENCE_BODY_BYTES>, ApiError>,
    endpoint: Endpoint,
) -> Response {
    let request_id = format!("req_{}", random_suffix());
    let result: ApiResult<Response> = async {
        let gateway = state.gateway()?;
        // Authentication comes first: an anonymous caller learns nothing about models or bodies.
        let context = Ports::from(&state);
        let owner = gateway.authenticate(&context, shared::http::bearer_token(&headers)).await?;
        gateway.note_use(&context, &owner);
        let JsonBody(body) = body?;
        let requested = DataResidency::from_header(headers.get(RESIDENCY_HEADER).map(|v| v.to_str().unwrap_or("")))?;
        let mut prepared = inference::prepare(gateway, endpoint, body, request_id.clone())?;
        // Where the call may run; admission refuses it first, before any money moves, if it cannot.
        prepared.residency = owner.residency(requested);
        // Admission and the call run on a task of their own: a client that hangs up cancels neither what
        // admission took (its spend holds) nor the call and its settlement.
        let call_state = state.clone();
        let call = shared::tasks::spawn("inference call", async move {
            let request_id = prepared.request_id.clone();
            let gateway = call_state.gateway()?;
            let window = gateway.admit(&context, &owner, &mut prepared).await?;
            let answer = inference::call(&context, gateway, owner, prepared).await;
            if let Err(e) = &answer {
                tracing::info!(%request_id, error = %e, "inference call failed");
            }
            answer.map(|answer| (answer, window))
        });
        let (answer, window) = call.await.map_err(|e| ApiError::Internal(format!("inference call: {e}")))??;
        Ok(with_rate_headers(answer_response(answer), window.as_ref()))
    }
    .await;
    with_request_id(result.into_response(), &request_id)
}
