# InferexAI backend. Quick start: `make run` (the whole API on 127.0.0.1:8080) and `make test`.

SHELL := /bin/bash
LAMBDA_FUNCTIONS := signup auth kyc wallet razorpay-webhook jobs keys inference usage privacy
CARGO_LAMBDA_VERSION := 1.9.2

.PHONY: run test bench build deploy tools clean

## run: build and serve every function's routes locally on the embedded store (no AWS, no network).
run:
	cargo run -p dev-server

## test: fmt, clippy, cfn-lint, unit + contract + end-to-end tests on both storage backends.
test:
	scripts/test.sh

## bench: added latency of the gateway versus calling a local provider stand-in directly (release build).
bench:
	cargo build --release -p dev-server --bins
	INFEREX_BENCH_SERVER=target/release/dev-server target/release/bench

## tools: install DynamoDB Local, cfn-lint and cargo-lambda under .tools/.
tools:
	scripts/ensure-tools.sh
	@test -x .tools/venv/bin/cargo-lambda || .tools/venv/bin/pip install --quiet --disable-pip-version-check "cargo-lambda==$(CARGO_LAMBDA_VERSION)"

## build: release arm64 Lambda binaries -> target/lambda/<function>/bootstrap.
# cargo-lambda (and the zig linker it uses for arm64) live in the project's tool virtualenv.
build: export PATH := $(CURDIR)/.tools/venv/bin:$(PATH)
build: tools
	rustup target list --installed | grep -q aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
	cargo lambda build --release --arm64 $(addprefix --package ,$(LAMBDA_FUNCTIONS))

## deploy: build with SAM (cargo-lambda) and deploy the stack; needs the AWS SAM CLI and credentials.
deploy:
	sam build --beta-features
	sam deploy --guided

clean:
	cargo clean
	rm -rf .tools .aws-sam
