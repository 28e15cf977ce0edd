// node-postgres through mds's pooler, run by tests/sdk/test_pooler.py:
//   DATABASE_URL=... CLIENTS=50 ROUNDS=10 node tests/node/pool_check.js
// Expects a table `node_check (client int, round int)`. Opens CLIENTS
// connections at once (a pg.Pool of that size), each runs ROUNDS
// transactions with parameterised statements (the extended protocol,
// unnamed statements, as node-postgres sends them unless a query is
// named; with NAMED=1 every statement is named, so it is prepared once per
// connection and must survive transaction pooling), then one client checks
// what landed. Prints one JSON line.
"use strict";
const { Pool } = require("pg");

async function main() {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error("DATABASE_URL is not set");
  const clients = Number(process.env.CLIENTS || 50);
  const rounds = Number(process.env.ROUNDS || 10);
  const named = process.env.NAMED === "1";
  // A named query is parsed once per connection; node-postgres then only
  // binds and executes it by name.
  const statement = (name, text, values) => (named ? { name, text, values } : { text, values });
  const pool = new Pool({ connectionString: url, max: clients, connectionTimeoutMillis: 30000 });
  const began = Date.now();
  let transactions = 0;
  const errors = [];
  const pids = new Set();
  await Promise.all(
    Array.from({ length: clients }, async (_, c) => {
      const client = await pool.connect();
      try {
        for (let r = 0; r < rounds; r++) {
          try {
            await client.query("BEGIN");
            await client.query(
              statement("insert-round", "INSERT INTO node_check (client, round) VALUES ($1, $2)", [c, r])
            );
            const { rows } = await client.query(
              statement(
                "count-rounds",
                "SELECT pg_backend_pid() AS pid, count(*)::int AS n FROM node_check WHERE client = $1",
                [c]
              )
            );
            if (rows[0].n !== r + 1) throw new Error(`client ${c} round ${r}: saw ${rows[0].n} rows`);
            pids.add(rows[0].pid);
            await client.query("COMMIT");
            transactions++;
          } catch (e) {
            errors.push(String(e.message || e));
            await client.query("ROLLBACK").catch(() => {});
          }
        }
      } finally {
        client.release();
      }
    })
  );
  const { rows } = await pool.query("SELECT count(*)::int AS n, current_user AS who FROM node_check");
  await pool.end();
  console.log(
    JSON.stringify({
      transactions,
      errors,
      rows: rows[0].n,
      user: rows[0].who,
      server_pids: pids.size,
      ms: Date.now() - began,
    })
  );
}

main().catch((e) => {
  console.log(JSON.stringify({ fatal: String(e.message || e) }));
  process.exit(1);
});
