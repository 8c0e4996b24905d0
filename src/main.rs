use clap::Parser;

fn main() {
    let cli = dcr_gateway::cli::Cli::parse();
    std::process::exit(dcr_gateway::cli::dispatch(cli));
}
