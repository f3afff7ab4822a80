# InferexAI backend. Quick start: `make run` (the whole API on 127.0.0.1:8080) and `make test`.

SHELL := /bin/bash
LAMBDA_FUNCTIONS := signup auth kyc wallet razorpay-webhook jobs keys inference usage privacy mailer admin

.PHONY: run fleet test bench bench-fleet build deploy smoke tools clean

## run: build and serve every function's routes locally on the embedded store (no AWS, no network).
run:
	cargo run -p dev-server

## fleet: the API as deployed, on INFEREX_ADDR (default 127.0.0.1:8080): every request becomes the API Gateway
## event template.yaml produces and goes to the real function binaries (built for this machine) through the
## Lambda runtime API, one invocation per instance, instances frozen between invocations (SIGSTOP), up to
## INFEREX_FLEET_CONCURRENCY (10) per function; the jobs every INFEREX_FLEET_JOBS_EVERY_SECONDS (900); on
## DynamoDB Local and moto, with make run's stand-ins. GET /_fleet lists the instances.
fleet:
	scripts/fleet.sh

## test: fmt, clippy, cfn-lint, unit + contract + end-to-end tests on both storage backends.
test:
	scripts/test.sh

## bench: added latency of the gateway versus calling a local provider stand-in directly, a closed-loop
## throughput sweep (release build) and the same steps side by side with LiteLLM's proxy (installed from PyPI
## under .tools/); INFEREX_BENCH_SOAK_SECONDS=300 adds a soak (memory, store size).
bench:
	cargo build --release -p dev-server --bins
	INFEREX_BENCH_LITELLM="$$(scripts/ensure-litellm.sh)" INFEREX_BENCH_SERVER=target/release/dev-server target/release/bench

## bench-fleet: make fleet (release builds, each instance held to its MemorySize's share of a vCPU where the
## machine allows) under closed-loop load: one account at 1, 10 and 50 connections (and streamed at 10),
## 20 accounts at 50, then the same with instances killed and frozen, then a rate- and spend-limited key;
## prints calls/s, latency p50/p99, DynamoDB writes and capacity units per call, inference CPU per call, the
## busiest item's writes/s, false 402s and missing charges (both must be 0), and each function's cold
## starts and peak memory. INFEREX_BENCH_FLEET_SECONDS sets each step's length (10).
bench-fleet:
	scripts/ensure-tools.sh
	cargo build --release --locked --bins $(addprefix -p ,signup auth kyc wallet razorpay-webhook jobs keys inference usage privacy mailer admin)
	cargo build --release --locked -p dev-server --bin fleet --bin bench-fleet
	scripts/with-emulators.sh target/release/bench-fleet

## tools: install DynamoDB Local, cfn-lint, AWS SAM's translator, moto and the openai SDK under .tools/.
tools:
	scripts/ensure-tools.sh

## build: release arm64 Lambda binaries -> target/lambda/<function>/bootstrap (installs cargo-lambda, zig).
build: export PATH := $(CURDIR)/.tools/venv/bin:$(PATH)
build:
	scripts/ensure-deploy-tools.sh
	cargo lambda build --release --arm64 $(addprefix --package ,$(LAMBDA_FUNCTIONS))

## deploy: build with SAM and deploy the stack to ap-south-1 (samconfig.toml), no prompts, then publish the
## dashboard (dashboard/site to its bucket, CloudFront invalidated); AWS credentials are needed from the
## account check on. The alarms' address is required the first time (ALARM_EMAIL=ops@example.in make deploy)
## and kept in samconfig.toml. Extra `sam deploy` arguments: DEPLOY_ARGS="--parameter-overrides Name=Value".
# The tool virtualenv comes first: cargo-lambda finds zig through its `python3`.
deploy: export PATH := $(CURDIR)/.tools/venv/bin:$(CURDIR)/.tools/sam/bin:$(PATH)
deploy:
	python3 scripts/alarm-address.py samconfig.toml $(DEPLOY_ARGS) > /dev/null
	scripts/ensure-deploy-tools.sh sam
	sam build
	.tools/sam/bin/python scripts/check-account.py $(DEPLOY_ARGS)
	.tools/sam/bin/python scripts/alarm-address.py samconfig.toml --deploy $(DEPLOY_ARGS)
	.tools/sam/bin/python scripts/publish-dashboard.py $(DEPLOY_ARGS)

## smoke: after a deploy, check the live API: make smoke API_URL=https://... API_KEY=sk-...
smoke:
	scripts/ensure-deploy-tools.sh smoke
	.tools/smoke/bin/python scripts/smoke.py "$(API_URL)" "$(API_KEY)"

clean:
	cargo clean
	rm -rf .tools .aws-sam
