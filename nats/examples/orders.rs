//! Orders on the local queue: the application of `orders/app.rs`, which
//! `orders_on_nats` builds on NATS JetStream. The two differ in this file's
//! one `use` of `Queue` (`.ci/run` builds and runs both).
//!
//! ```sh
//! cargo run -p durq-nats --example orders -- /tmp/orders
//! ```

use durq::Queue;

#[path = "orders/app.rs"]
mod app;

fn main() -> Result<(), durq::Error> {
    app::main()
}
