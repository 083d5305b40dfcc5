# Shortcuts for the Notify workspace. `just` is optional: every recipe is one command you
# can type yourself (https://github.com/casey/just to install it).

# List the recipes.
default:
    @just --list

# The whole platform locally: PostgreSQL, RabbitMQ, the API on :8080, relay and workers.
dev *ARGS:
    cargo xtask dev {{ARGS}}

# The test suite on real PostgreSQL and RabbitMQ (extra arguments go to cargo test).
test *ARGS:
    cargo xtask test {{ARGS}}

# Bring the platform up, send on every channel, check each is sent, stop.
smoke:
    cargo xtask dev --smoke

# The stack under load, one table of figures and their ceilings (target/bench/latest.md); `just bench --smoke` for a quick check.
bench *ARGS:
    cargo xtask bench {{ARGS}}

# Format the code.
fmt:
    cargo fmt --all

# Lint everything, warnings are errors (as in CI).
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Offline checks of docker-compose.yml, the Dockerfile and the Kubernetes manifests (as in CI).
deploy-check:
    bash deploy/check
