-- Demo data for the quickstart: run once when .dev/demo.db is created.
CREATE TABLE customers (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    email   TEXT UNIQUE,
    vip     BOOLEAN NOT NULL DEFAULT 0
);
CREATE TABLE products (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL,
    price   REAL NOT NULL
);
CREATE TABLE orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers(id),
    product_id  INTEGER NOT NULL REFERENCES products(id),
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    placed_at   TEXT NOT NULL DEFAULT (datetime('now'))
);
INSERT INTO customers (id, name, email, vip) VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 1),
    (2, 'Alan Turing', 'alan@example.com', 0),
    (3, 'Grace Hopper', 'grace@example.com', 1);
INSERT INTO products (id, name, price) VALUES
    (1, 'Keyboard', 49.5),
    (2, 'Monitor', 189.0),
    (3, 'Cable', 4.25);
INSERT INTO orders (customer_id, product_id, quantity, placed_at) VALUES
    (1, 2, 1, '2026-01-05 10:00:00'),
    (2, 1, 2, '2026-01-06 11:30:00'),
    (3, 3, 5, '2026-01-07 09:15:00');
