//! The `twinlink` binary: parses the command line and runs the broker.

use clap::Parser;
use twinlink::config::{Cli, Command, Settings};

fn main() -> std::process::ExitCode {
    // Before the runtime and its threads allocate anything.
    twinlink::without_huge_pages();
    actix_web::rt::System::new().block_on(run())
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Version) = cli.command {
        println!("twinlink {}", env!("CARGO_PKG_VERSION"));
        return std::process::ExitCode::SUCCESS;
    }
    if let Some(Command::Models { model }) = &cli.command {
        return models(model.as_deref());
    }
    let settings = match Settings::load(cli.options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("twinlink: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    twinlink::telemetry::init(settings.log_format, &settings.log);
    if let Some(Command::Migrate) = cli.command {
        if settings.database_url.is_none() {
            eprintln!("twinlink migrate: give --database-url (or TWINLINK_DATABASE_URL)");
            return std::process::ExitCode::from(2);
        }
        return match twinlink::server::store(&settings, twinlink::server::DatabaseWait::Wait).await
        {
            Ok(_) => {
                println!("twinlink: the database schema is up to date");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("twinlink migrate: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let data_dir = settings.data_dir.clone();
    let (server, addr) =
        match twinlink::server::start_with(settings, twinlink::server::DatabaseWait::Background)
            .await
        {
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

/// `twinlink models [MODEL]`: what the data-model checks know, for an integrator to see what a
/// binding will check.
fn models(name: Option<&str>) -> std::process::ExitCode {
    use std::fmt::Write as _;
    use twinlink::model::conformance::rules;
    let mut out = String::new();
    match name {
        None => {
            out.push_str("model\tversion\tattributes\trequired\n");
            for (key, m) in rules::bundled() {
                let (n, required) = (m.attributes.len(), m.required.len());
                let _ = writeln!(out, "{key}\t{}\t{n}\t{required}", m.version);
            }
        }
        Some(name) => match rules::find(name) {
            Ok((key, m)) => {
                let shown = serde_json::json!({"model": key, "rules": m});
                let _ = writeln!(out, "{:#}", shown);
            }
            Err(e) => {
                eprintln!("twinlink models: {e}");
                return std::process::ExitCode::from(2);
            }
        },
    }
    // A closed pipe (`twinlink models | head`) ends the listing, as for any command-line tool.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    std::process::ExitCode::SUCCESS
}
