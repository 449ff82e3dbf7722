//! Orders on NATS JetStream: the application of `orders/app.rs`, which
//! `orders` builds on the local queue. The two differ in this file's one
//! `use` of `Queue` (`.ci/run` builds and runs both).
//!
//! ```sh
//! cargo run -p durq-nats --example orders_on_nats -- nats://127.0.0.1:4222/orders
//! ```

use durq_nats::Queue;

#[path = "orders/app.rs"]
mod app;

fn main() -> Result<(), durq::Error> {
    app::main()
}
