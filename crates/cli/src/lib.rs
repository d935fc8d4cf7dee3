//! The `wharf` command line: docker's verbs over HTTP/1.1 to the wharf daemon's socket.
//! Rendering only; every decision about containers and images is the daemon's.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

/// `print!` that ends the process quietly when stdout's reader went away (`| head`), as a
/// SIGPIPE ends docker, instead of panicking.
macro_rules! out {
    ($($t:tt)*) => { $crate::stdio::write_stdout(format!($($t)*).as_bytes()) };
}

macro_rules! outln {
    () => { $crate::stdio::write_stdout(b"\n") };
    ($($t:tt)*) => { $crate::stdio::write_stdout(format!("{}\n", format_args!($($t)*)).as_bytes()) };
}

mod build;
mod client;
mod containers;
mod createopts;
mod credentials;
mod format;
mod images;
mod networks;
mod opts;
mod progress;
mod registry;
mod run;
mod stdio;
mod system;
mod tabwriter;
mod template;
mod units;

use client::{Client, ClientError, Target};
use opts::{Cli, Cmd, ContainerCmd, ImageCmd, NetworkCmd, SystemCmd};

/// Entry point for every `wharf` invocation that is not `shim` or `daemon`.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == client::DETACH_VERB) {
        let err = client::detach_and_exec(&args[2..]);
        eprintln!(
            "wharf: {:#}",
            anyhow::Error::from(err).context("starting the daemon")
        );
        return ExitCode::from(1);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 125 } else { 0 });
        }
    };
    if cli.version {
        outln!("wharf version {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(cmd) = cli.cmd else {
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    };
    let target = match Target::resolve(cli.host.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wharf: {:#}", anyhow::Error::from(e));
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!(
                "wharf: {:#}",
                anyhow::Error::from(e).context("starting the async runtime")
            );
            return ExitCode::from(1);
        }
    };
    let client = Client::new(target);
    let code = rt.block_on(dispatch(&client, cmd));
    // Detached stdin readers may still block in read(2); they must not hold up the exit.
    rt.shutdown_background();
    ExitCode::from(code)
}

/// Prints an error docker style and returns the exit code.
fn fail(err: impl Into<anyhow::Error>, daemon: bool, code: u8) -> u8 {
    let err = err.into();
    if daemon {
        eprintln!("{err}");
    } else {
        eprintln!("wharf: {err:#}");
    }
    code
}

fn is_daemon(e: &ClientError) -> bool {
    matches!(e, ClientError::Daemon { .. })
}

macro_rules! outcome {
    ($res:expr, $err:ty, $daemon:expr) => {
        match $res {
            Ok(code) => code,
            Err(e) => {
                let e: $err = e;
                let daemon = $daemon(&e);
                let code = e.exit_code();
                fail(e, daemon, code)
            }
        }
    };
}

fn run_outcome(res: Result<u8, run::RunError>, run_family: bool) -> u8 {
    match res {
        Ok(code) => code,
        Err(e) => {
            let code = if run_family {
                e.run_exit_code()
            } else {
                e.exit_code()
            };
            let daemon = !run_family && matches!(&e, run::RunError::Client(c) if is_daemon(c));
            fail(e, daemon, code)
        }
    }
}

fn images_daemon(e: &images::ImagesError) -> bool {
    matches!(e, images::ImagesError::Client(c) if is_daemon(c))
}

fn build_daemon(e: &build::BuildError) -> bool {
    matches!(e, build::BuildError::Client(c) if is_daemon(c))
}

fn containers_daemon(e: &containers::ContainersError) -> bool {
    matches!(e, containers::ContainersError::Client(c) if is_daemon(c))
}

fn networks_daemon(e: &networks::NetworksError) -> bool {
    matches!(e, networks::NetworksError::Client(c) if is_daemon(c))
}

fn system_daemon(e: &system::SystemError) -> bool {
    matches!(e, system::SystemError::Client(c) if is_daemon(c))
}

async fn dispatch(client: &Client, cmd: Cmd) -> u8 {
    use containers::ContainersError as CE;
    use images::ImagesError as IE;
    use system::SystemError as SE;
    let cmd = match cmd {
        Cmd::Image { cmd } => match cmd {
            ImageCmd::Ls(a) => Cmd::Images(a),
            ImageCmd::Rm(a) => Cmd::Rmi(a),
            ImageCmd::Tag(a) => Cmd::Tag(a),
            ImageCmd::Save(a) => Cmd::Save(a),
            ImageCmd::Load(a) => Cmd::Load(a),
            ImageCmd::Import(a) => Cmd::Import(a),
            ImageCmd::History(a) => Cmd::History(a),
            ImageCmd::Pull(a) => Cmd::Pull(a),
            ImageCmd::Push(a) => Cmd::Push(a),
            ImageCmd::Build(a) => Cmd::Build(a),
            ImageCmd::Inspect(a) => {
                let res = containers::inspect_objects(
                    client,
                    &a.names,
                    containers::Kind::Image,
                    a.format.as_deref(),
                    a.size,
                )
                .await;
                return outcome!(res, CE, containers_daemon);
            }
            ImageCmd::Prune(a) => {
                return outcome!(images::prune(client, a).await, IE, images_daemon);
            }
        },
        Cmd::Container { cmd } => match cmd {
            ContainerCmd::Run(a) => Cmd::Run(a),
            ContainerCmd::Create(a) => Cmd::Create(a),
            ContainerCmd::Start(a) => Cmd::Start(a),
            ContainerCmd::Stop(a) => Cmd::Stop(a),
            ContainerCmd::Kill(a) => Cmd::Kill(a),
            ContainerCmd::Restart(a) => Cmd::Restart(a),
            ContainerCmd::Rm(a) => Cmd::Rm(a),
            ContainerCmd::Ls(a) => Cmd::Ps(a),
            ContainerCmd::Logs(a) => Cmd::Logs(a),
            ContainerCmd::Wait(a) => Cmd::Wait(a),
            ContainerCmd::Exec(a) => Cmd::Exec(a),
            ContainerCmd::Attach(a) => Cmd::Attach(a),
            ContainerCmd::Top(a) => Cmd::Top(a),
            ContainerCmd::Pause(a) => Cmd::Pause(a),
            ContainerCmd::Unpause(a) => Cmd::Unpause(a),
            ContainerCmd::Rename(a) => Cmd::Rename(a),
            ContainerCmd::Stats(a) => Cmd::Stats(a),
            ContainerCmd::Inspect(a) => {
                let res = containers::inspect_objects(
                    client,
                    &a.names,
                    containers::Kind::Container,
                    a.format.as_deref(),
                    a.size,
                )
                .await;
                return outcome!(res, CE, containers_daemon);
            }
            ContainerCmd::Prune(a) => {
                return outcome!(containers::prune(client, a).await, CE, containers_daemon);
            }
        },
        Cmd::System {
            cmd: SystemCmd::Info(a),
        } => Cmd::Info(a),
        Cmd::Network { cmd } => {
            use networks::NetworksError as NE;
            let res = match cmd {
                NetworkCmd::Create(a) => networks::create(client, a).await,
                NetworkCmd::Ls(a) => networks::ls(client, a).await,
                NetworkCmd::Inspect(a) => networks::inspect(client, a).await,
                NetworkCmd::Rm(a) => networks::rm(client, a).await,
                NetworkCmd::Prune(a) => networks::prune(client, a).await,
                NetworkCmd::Connect(a) => networks::connect(client, a).await,
                NetworkCmd::Disconnect(a) => networks::disconnect(client, a).await,
            };
            return outcome!(res, NE, networks_daemon);
        }
        Cmd::Port(a) => {
            return outcome!(
                networks::port(client, a).await,
                networks::NetworksError,
                networks_daemon
            );
        }
        other => other,
    };
    match cmd {
        Cmd::Run(a) => run_outcome(run::run(client, a).await, true),
        Cmd::Create(a) => run_outcome(run::create_cmd(client, a).await, true),
        Cmd::Start(a) => run_outcome(run::start(client, a).await, false),
        Cmd::Attach(a) => run_outcome(run::attach(client, a).await, false),
        Cmd::Exec(a) => run_outcome(run::exec(client, a).await, false),
        Cmd::Stop(a) => outcome!(
            containers::stop(client, a, false).await,
            CE,
            containers_daemon
        ),
        Cmd::Restart(a) => outcome!(
            containers::stop(client, a, true).await,
            CE,
            containers_daemon
        ),
        Cmd::Kill(a) => outcome!(containers::kill(client, a).await, CE, containers_daemon),
        Cmd::Rm(a) => outcome!(containers::rm(client, a).await, CE, containers_daemon),
        Cmd::Ps(a) => outcome!(containers::ps(client, a).await, CE, containers_daemon),
        Cmd::Logs(a) => outcome!(containers::logs(client, a).await, CE, containers_daemon),
        Cmd::Wait(a) => outcome!(containers::wait(client, a).await, CE, containers_daemon),
        Cmd::Inspect(a) => outcome!(containers::inspect(client, a).await, CE, containers_daemon),
        Cmd::Top(a) => outcome!(containers::top(client, a).await, CE, containers_daemon),
        Cmd::Pause(a) => outcome!(
            containers::pause(client, a, true).await,
            CE,
            containers_daemon
        ),
        Cmd::Unpause(a) => outcome!(
            containers::pause(client, a, false).await,
            CE,
            containers_daemon
        ),
        Cmd::Rename(a) => outcome!(containers::rename(client, a).await, CE, containers_daemon),
        Cmd::Stats(a) => outcome!(containers::stats(client, a).await, CE, containers_daemon),
        Cmd::Images(a) => outcome!(images::list(client, a).await, IE, images_daemon),
        Cmd::Import(a) => outcome!(images::import(client, a).await, IE, images_daemon),
        Cmd::Load(a) => outcome!(images::load(client, a).await, IE, images_daemon),
        Cmd::Save(a) => outcome!(images::save(client, a).await, IE, images_daemon),
        Cmd::Tag(a) => outcome!(images::tag(client, a).await, IE, images_daemon),
        Cmd::Rmi(a) => outcome!(images::rmi(client, a).await, IE, images_daemon),
        Cmd::History(a) => outcome!(images::history(client, a).await, IE, images_daemon),
        Cmd::Pull(a) => outcome!(
            registry::pull_cmd(client, a).await,
            registry::RegistryError,
            registry::RegistryError::said_by_daemon
        ),
        Cmd::Push(a) => outcome!(
            registry::push_cmd(client, a).await,
            registry::RegistryError,
            registry::RegistryError::said_by_daemon
        ),
        Cmd::Login(a) => outcome!(
            registry::login(client, a).await,
            registry::RegistryError,
            registry::RegistryError::said_by_daemon
        ),
        Cmd::Logout(a) => outcome!(
            registry::logout(a).await,
            registry::RegistryError,
            registry::RegistryError::said_by_daemon
        ),
        Cmd::Build(a) => outcome!(
            build::build(client, a).await,
            build::BuildError,
            build_daemon
        ),
        Cmd::Commit(a) => outcome!(
            build::commit(client, a).await,
            build::BuildError,
            build_daemon
        ),
        Cmd::Version(a) => outcome!(system::version(client, a).await, SE, system_daemon),
        Cmd::Info(a) => outcome!(system::info(client, a).await, SE, system_daemon),
        Cmd::Image { .. }
        | Cmd::Container { .. }
        | Cmd::System { .. }
        | Cmd::Network { .. }
        | Cmd::Port(_) => 1,
    }
}
