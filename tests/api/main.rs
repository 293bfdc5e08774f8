//! One integration-test binary. Storage tests run twice: on a fresh SQLite
//! file and on a fresh PostgreSQL database (random name, dropped after).

mod helpers;

mod bad_input;
mod browser;
mod call;
mod cancel;
mod children;
mod cli;
mod clock;
mod correlation;
mod crash;
mod dsl_fixtures;
mod follow_up;
mod incidents;
mod instances;
mod long_history;
mod med_ins;
mod migrations;
mod nodes;
mod payments;
mod peers;
mod promises;
mod schedules;
mod speed;
mod wechat_pay;
mod wechat_vectors;
