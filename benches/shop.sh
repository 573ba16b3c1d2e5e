# The example shop as the benches deploy it, sourced by orders-load.sh and
# tracing-load.sh: every Rust guest from target/wasm32-wasip2/guest and the Python
# fraud module from target/python (`modhost build` builds it), each module on
# SQLite in the run's data dir, and inventory stocked with a million of everything
# (a bench-only migration) so that every order can succeed. Needs WORK (a scratch
# dir) and GUEST (where the built guests are).
#
#   shop FILE INSTANCES EVENTS-SECTION [MORE-TOML]   (INSTANCES: inventory's and fraud's)

# Inventory's migrations plus one that stocks a million of everything.
mkdir -p "$WORK/inventory-migrations"
cp modules/inventory/migrations/*.sql "$WORK/inventory-migrations/"
echo "UPDATE stock SET available = 1000000;" > "$WORK/inventory-migrations/9001_bench_stock.sql"

shop() {
  cat > "$1" <<TOML
[app]
name = "bench-shop"
[modules.users]
component = "$GUEST/users.wasm"
routes = ["/users"]
database = "sqlite"
migrations = "$PWD/modules/users/migrations"
[modules.catalog]
component = "$GUEST/catalog.wasm"
routes = ["/catalog"]
keyvalue = ["lookups"]
database = "sqlite"
migrations = "$PWD/modules/catalog/migrations"
[modules.inventory]
component = "$GUEST/inventory.wasm"
routes = ["/inventory"]
database = "sqlite"
migrations = "$WORK/inventory-migrations"
limits = { concurrency = 256 }
instances = "$2"
[modules.payments]
component = "$GUEST/payments.wasm"
routes = ["/payments"]
config = { currencies = "EUR,USD,GBP", charge_limit_cents = 500000, processor_key = { env = "PAYMENTS_PROCESSOR_KEY", default = "sk_test_sandbox" } }
database = "sqlite"
migrations = "$PWD/modules/payments/migrations"
publishes = ["payments.charged", "payments.failed"]
limits = { concurrency = 256 }
[modules.orders]
component = "$GUEST/orders.wasm"
routes = ["/orders"]
calls = ["inventory", "fraud", "payments"]
database = "sqlite"
migrations = "$PWD/modules/orders/migrations"
publishes = ["orders.cancelled"]
subscribes = ["payments.charged", "payments.failed"]
limits = { concurrency = 256, timeout = "5s" }
[modules.fraud]
component = "$PWD/target/python/fraud.wasm"
routes = ["/fraud"]
calls = ["users"]
database = "sqlite"
migrations = "$PWD/modules/fraud/migrations"
publishes = ["fraud.flagged"]
subscribes = ["payments.failed"]
limits = { concurrency = 256, memory = "64MiB" }
instances = "$2"
[modules.notifications]
component = "$GUEST/notifications.wasm"
routes = ["/notifications"]
database = "sqlite"
migrations = "$PWD/modules/notifications/migrations"
subscribes = ["payments.charged", "orders.cancelled"]
[events]
$3
${4:-}
TOML
}

