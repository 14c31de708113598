//! `network: engine-only` on the Docker runtime: the agent's container is
//! attached to an *internal* Docker network (no route out of the host) and
//! reaches the engine through a relay listening on that network's gateway
//! address, which forwards to the engine's API. Nothing else outside the
//! container is reachable, except services of the host that listen on all
//! of its addresses (the gateway is one of them).

use bollard::models::NetworkCreateRequest;
use bollard::Docker;
use std::collections::HashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The network and its relay. Dropping it stops the relay.
#[derive(Debug)]
pub(crate) struct EngineOnlyNet {
    /// The Docker network's name.
    pub network: String,
    /// The engine API as agents on the network reach it.
    pub url: String,
    /// The relay's port (in `url`).
    pub port: u16,
    relay: tokio::task::JoinHandle<()>,
}

impl Drop for EngineOnlyNet {
    fn drop(&mut self) {
        self.relay.abort();
    }
}

/// Why the engine-only network could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetError {
    /// The Docker Engine refused to create or show the network.
    #[error("{action} network {network}: {source}")]
    Docker {
        /// `create` or `inspect`.
        action: &'static str,
        /// The network.
        network: String,
        /// The Docker Engine's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The network has no gateway to put the relay on.
    #[error("network {0} has no gateway address")]
    NoGateway(String),
    /// The relay cannot listen on the gateway.
    #[error("relay on {gateway} (network {network}): {source}")]
    Relay {
        /// The gateway address.
        gateway: String,
        /// The network.
        network: String,
        /// Why not.
        #[source]
        source: std::io::Error,
    },
}

/// Creates (or finds) the internal network `name` and starts a relay on its
/// gateway to `engine` (`host:port`), on port `port` when it is free (the
/// relay's port before a restart: the agents still running were given it),
/// else on any.
pub(crate) async fn open(
    docker: &Docker,
    name: &str,
    engine: String,
    port: Option<u16>,
) -> Result<EngineOnlyNet, NetError> {
    let failed = |action: &'static str| move |source| NetError::Docker { action, network: name.to_string(), source };
    let net = match find(docker, name).await.map_err(failed("list"))? {
        Some(id) => id,
        None => {
            let create = NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".into()),
                internal: Some(true),
                labels: Some(HashMap::from([("app".to_string(), "george".to_string())])),
                ..Default::default()
            };
            // The Docker Engine does not refuse a second network of the same
            // name: it is looked for first (above) and then named by its id.
            docker.create_network(create).await.map_err(failed("create"))?.id
        }
    };
    let net = docker
        .inspect_network(&net, None::<bollard::query_parameters::InspectNetworkOptions>)
        .await
        .map_err(failed("inspect"))?;
    let gateway = net
        .ipam
        .and_then(|i| i.config)
        .into_iter()
        .flatten()
        .find_map(|c| c.gateway)
        .ok_or_else(|| NetError::NoGateway(name.to_string()))?;
    let relay_failed = |source| NetError::Relay { gateway: gateway.clone(), network: name.to_string(), source };
    let earlier = match port {
        Some(port) => TcpListener::bind((gateway.as_str(), port))
            .await
            .inspect_err(|e| tracing::warn!(network = name, port, error = %e, "the relay's earlier port is taken; agents given it cannot report"))
            .ok(),
        None => None,
    };
    let listener = match earlier {
        Some(l) => l,
        None => TcpListener::bind((gateway.as_str(), 0)).await.map_err(relay_failed)?,
    };
    let port = listener.local_addr().map_err(relay_failed)?.port();
    tracing::info!(network = name, relay = %format!("{gateway}:{port}"), engine, "engine-only network ready");
    let relay = tokio::spawn(relay(listener, engine));
    Ok(EngineOnlyNet { network: name.to_string(), url: format!("http://{gateway}:{port}"), port, relay })
}

/// The id of the network called exactly `name`, if there is one (the
/// oldest, should there be several: an earlier version could make twins).
async fn find(docker: &Docker, name: &str) -> Result<Option<String>, bollard::errors::Error> {
    let filters = HashMap::from([("name", vec![name.to_string()])]);
    let opts = bollard::query_parameters::ListNetworksOptionsBuilder::new().filters(&filters).build();
    let mut found: Vec<_> =
        docker.list_networks(Some(opts)).await?.into_iter().filter(|n| n.name.as_deref() == Some(name)).collect();
    found.sort_by(|a, b| a.created.cmp(&b.created));
    Ok(found.into_iter().next().and_then(|n| n.id))
}

/// Forwards every connection to `engine`; the connections end with it.
async fn relay(listener: TcpListener, engine: String) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        while connections.try_join_next().is_some() {}
        let engine = engine.clone();
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(&engine).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
