//! The `twinlink` binary: parses the command line and runs the broker.

use clap::Parser;
use twinlink::config::{Cli, Command, Settings};

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Version) = cli.command {
        println!("twinlink {}", env!("CARGO_PKG_VERSION"));
        return std::process::ExitCode::SUCCESS;
    }
    let settings = match Settings::load(cli.options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("twinlink: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    twinlink::telemetry::init(settings.log_format, &settings.log);
    let data_dir = settings.data_dir.clone();
    let (server, addr) = match twinlink::server::start(settings) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tracing::info!(%addr, data_dir = %data_dir.display(), "twinlink is serving the NGSI-LD API at /ngsi-ld/v1");
    match server.await {
        Ok(()) => {
            tracing::info!("twinlink stopped");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("server error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
