//! `orderbridge`: parse the command line and dispatch. Nothing else.

use clap::Parser;

fn main() {
    orderbridge::allocator::tune();
    // One TLS crypto provider for every client (reqwest, later lettre): ring.
    orderbridge::connectors::install_crypto_provider();
    let cli = orderbridge::cli::Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime starts");
    let code = match runtime.block_on(orderbridge::cli::run_command(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
