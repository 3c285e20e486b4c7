//! A worked Unit of Work: an order service whose aggregates record domain
//! events, saved with their rows in one transaction.
//!
//! Runs on the embedded default, a SQLite file in a fresh temporary directory:
//!
//! ```text
//! cargo run -p outbox --example orders
//! ```
//!
//! It places three orders and pays one. Then it pays another whose card is
//! declined after the order's row was already saved: that unit of work is
//! dropped, so neither the row's change nor its `order.paid` event remains. It
//! ends by listing what the relay would publish.

use outbox::sqlite::{SqliteStore, map_error};
use outbox::{Aggregate, Error, NewEvent, OutboxStore, Result, UnitOfWork};
use serde_json::json;
use sqlx::Row;

/// An order, the aggregate. Every state change records an event.
struct Order {
    id: i64,
    total_cents: i64,
    status: &'static str,
    recorded: Vec<NewEvent>,
}

impl Order {
    fn place(id: i64, total_cents: i64) -> Result<Self> {
        let mut order = Order {
            id,
            total_cents,
            status: "placed",
            recorded: Vec::new(),
        };
        order.record(
            "order.placed",
            json!({ "order_id": id, "total_cents": total_cents }),
        )?;
        Ok(order)
    }

    fn pay(&mut self) -> Result<()> {
        if self.status != "placed" {
            return Err(Error::invalid_input(format!(
                "order {} is {}, not placed",
                self.id, self.status
            )));
        }
        self.status = "paid";
        self.record("order.paid", json!({ "order_id": self.id }))
    }

    fn record(&mut self, event_type: &str, payload: serde_json::Value) -> Result<()> {
        let key = format!("order-{}", self.id);
        self.recorded
            .push(NewEvent::json("orders", key, event_type, &payload)?);
        Ok(())
    }
}

impl Aggregate for Order {
    fn take_events(&mut self) -> Vec<NewEvent> {
        std::mem::take(&mut self.recorded)
    }
}

/// Loads and saves orders inside a unit of work.
struct OrderRepository;

impl OrderRepository {
    async fn save(&self, uow: &mut UnitOfWork<'_, SqliteStore>, order: &mut Order) -> Result<()> {
        sqlx::query(
            "INSERT INTO orders (id, total_cents, status) VALUES (?, ?, ?) \
             ON CONFLICT (id) DO UPDATE SET status = excluded.status",
        )
        .bind(order.id)
        .bind(order.total_cents)
        .bind(order.status)
        .execute(uow.connection())
        .await
        .map_err(map_error)?;

        uow.collect(order);
        Ok(())
    }

    async fn load(&self, uow: &mut UnitOfWork<'_, SqliteStore>, id: i64) -> Result<Order> {
        let row = sqlx::query("SELECT total_cents, status FROM orders WHERE id = ?")
            .bind(id)
            .fetch_optional(uow.connection())
            .await
            .map_err(map_error)?
            .ok_or_else(|| Error::invalid_input(format!("order {id} does not exist")))?;
        let status = match row.get::<String, _>("status").as_str() {
            "paid" => "paid",
            _ => "placed",
        };
        Ok(Order {
            id,
            total_cents: row.get("total_cents"),
            status,
            recorded: Vec::new(),
        })
    }
}

/// Pays order `id`; `card_ok: false` makes the charge fail after the save.
async fn pay(store: &SqliteStore, orders: &OrderRepository, id: i64, card_ok: bool) -> Result<()> {
    let mut uow = UnitOfWork::begin(store).await?;
    let mut order = orders.load(&mut uow, id).await?;
    order.pay()?;
    orders.save(&mut uow, &mut order).await?;

    if !card_ok {
        // Returning drops the unit of work: the update and the event roll back.
        return Err(Error::invalid_input(format!(
            "card declined for order {id}"
        )));
    }
    uow.commit().await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("outbox-orders-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::config("cannot create dir").with_source(e))?;
    let url = format!("sqlite://{}", dir.join("orders.db").display());

    let store = SqliteStore::connect(&url, Default::default()).await?;
    store.migrate().await?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS orders \
         (id INTEGER PRIMARY KEY, total_cents INTEGER NOT NULL, status TEXT NOT NULL)",
    )
    .execute(store.pool())
    .await
    .map_err(map_error)?;
    let orders = OrderRepository;

    // Three orders placed in one unit of work: three rows, three events.
    let mut uow = UnitOfWork::begin(&store).await?;
    for (id, total) in [(1, 2500), (2, 990), (3, 12000)] {
        orders.save(&mut uow, &mut Order::place(id, total)?).await?;
    }
    uow.commit().await?;

    pay(&store, &orders, 2, true).await?;
    let declined = pay(&store, &orders, 3, false).await.unwrap_err();
    println!("paying order 3 rolled back: {declined}");

    println!("events waiting for the relay in {url}:");
    for event in store.pending(100).await? {
        println!(
            "  {} #{} {} {}",
            event.key, event.seq, event.event_type, event.event_id
        );
    }
    Ok(())
}
