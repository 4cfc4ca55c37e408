//! Tests of the Redis Cluster store against a local 3-master cluster that
//! each test starts (Debian's `redis-server` and `redis-cli` on PATH); the
//! same over TLS in `cluster_tls_tests.rs`.

use crate::session::SessionStore;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::*;
use crate::session::cache::{CacheOptions, CachedStore};
use crate::session::contract::sample_record;
use crate::session::random_token;
use crate::session::seal::Keyring;
use crate::session::tls_tests::Pki;
use crate::time::{Clock, SystemClock};

#[path = "cluster_tls_tests.rs"]
mod tls;

/// Ports nobody listens on right now: every listener is held until all are
/// chosen, so the list has no duplicates.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// Poll `check` until it holds, failing after 30 s.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three cluster-enabled redis-servers (no replicas) in a temp dir, joined
/// by `redis-cli --cluster create`; every process is killed on drop, also
/// when the test panics, and the temp dir (certificates too) removed.
pub(crate) struct LocalCluster {
    children: Vec<Child>,
    pub(crate) ports: Vec<u16>,
    /// With TLS, the test CA and the certificate every node serves.
    pki: Option<Pki>,
    _dir: tempfile::TempDir,
}

impl LocalCluster {
    pub(crate) fn start() -> Self {
        Self::start_with(None)
    }

    /// TLS only: `--port 0`, TLS on the client port, the cluster bus and
    /// replication, with certificates from a CA created for this cluster,
    /// for `localhost` and `127.0.0.1`.
    pub(crate) fn start_tls() -> Self {
        Self::start_with(Some("DNS:localhost,IP:127.0.0.1"))
    }

    /// TLS with node certificates for `names` only (`subjectAltName` syntax).
    pub(crate) fn start_tls_naming(names: &str) -> Self {
        Self::start_with(Some(names))
    }

    fn start_with(tls_names: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let pki = tls_names.map(|names| Pki::create_naming(dir.path(), names));
        // Client and cluster-bus port per node.
        let ports = free_ports(6);
        let mut cluster = Self {
            children: Vec::new(),
            ports: ports.chunks(2).map(|pair| pair[0]).collect(),
            pki,
            _dir: dir,
        };
        for (i, pair) in ports.chunks(2).enumerate() {
            let node_dir = cluster._dir.path().join(format!("n{i}"));
            std::fs::create_dir(&node_dir).expect("node dir");
            let node = spawn_node(pair[0], pair[1], &node_dir, cluster.pki.as_ref());
            cluster.children.push(node);
        }
        for &port in &cluster.ports {
            wait_until("a cluster node to listen", || {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
        }
        let mut cli = Command::new("redis-cli");
        if let Some(pki) = &cluster.pki {
            cli.arg("--tls").arg("--cacert").arg(&pki.ca);
        }
        // `--cluster create` waits without end for nodes that never join
        // (a failed handshake on the cluster bus): bounded here.
        let log = cluster._dir.path().join("create.log");
        let out = std::fs::File::create(&log).expect("create.log");
        let mut create = cli
            .arg("--cluster")
            .arg("create")
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("create.log"))
            .stderr(out)
            .spawn()
            .expect("redis-cli on PATH");
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            if let Some(status) = create.try_wait().expect("redis-cli") {
                break status.success();
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                let _ = create.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            created,
            "redis-cli --cluster create failed or timed out: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        for &port in &cluster.ports {
            wait_until("cluster_state:ok", || {
                cluster
                    .query::<String>(port, redis::cmd("CLUSTER").arg("INFO"))
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
        }
        cluster
    }

    /// The test CA and the nodes' certificate (TLS clusters only).
    pub(crate) fn pki(&self) -> &Pki {
        self.pki.as_ref().expect("a TLS cluster")
    }

    /// `cmd` on the node at `port` alone, over TLS on a TLS cluster.
    pub(crate) fn query<T: redis::FromRedisValue>(
        &self,
        port: u16,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let client = match &self.pki {
            Some(pki) => {
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(&pki.ca)?),
                };
                // Every test certificate names `localhost`, not all `127.0.0.1`.
                Client::build_with_tls(format!("rediss://localhost:{port}"), certs)?
            }
            None => Client::open(format!("redis://127.0.0.1:{port}"))?,
        };
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
        // A node that stalls fails the poll instead of hanging the test.
        conn.set_read_timeout(Some(Duration::from_secs(2)))?;
        cmd.query(&mut conn)
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub(crate) fn seeds(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        seeds.join(",")
    }

    /// `redis+cluster://SEEDS`, or on a TLS cluster
    /// `rediss+cluster://SEEDS/?cacert=CA` with the cluster's own CA.
    pub(crate) fn url(&self) -> String {
        match &self.pki {
            Some(pki) => self.tls_url(&self.seeds(), &pki.ca),
            None => format!("redis+cluster://{}", self.seeds()),
        }
    }

    /// `rediss+cluster://SEEDS/?cacert=CA`.
    pub(crate) fn tls_url(&self, seeds: &str, ca: &Path) -> String {
        format!("rediss+cluster://{seeds}/?cacert={}", ca.display())
    }

    /// Stop node `i` (SIGKILL) and wait until its port is closed.
    fn kill_node(&mut self, i: usize) {
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        let port = self.ports[i];
        wait_until("a killed node to close its port", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        });
    }
}

fn spawn_node(port: u16, bus_port: u16, dir: &Path, pki: Option<&Pki>) -> Child {
    let mut server = Command::new("redis-server");
    server.args(["--bind", "127.0.0.1"]);
    match pki {
        // The nodes then announce their TLS port, in CLUSTER SLOTS and in
        // MOVED redirections alike.
        Some(pki) => {
            server
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(["--tls-auth-clients", "no"])
                .arg("--tls-cert-file")
                .arg(&pki.cert)
                .arg("--tls-key-file")
                .arg(&pki.key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca);
        }
        None => {
            server.args(["--port", &port.to_string()]);
        }
    }
    server
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            &bus_port.to_string(),
        ])
        .args(["--cluster-config-file", "nodes.conf"])
        // Nodes left alive keep serving their slots when one dies.
        .args(["--cluster-require-full-coverage", "no"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH")
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ring() -> Arc<Keyring> {
    Arc::new(Keyring::from_bytes(&[[7; 32]]).expect("ring"))
}

/// A store on `url` under a fresh prefix (tests share no keys).
async fn store_at(url: &str, prefix: &str) -> RedisClusterStore {
    let options = RedisOptions {
        key_prefix: prefix.to_owned(),
        ..RedisOptions::default()
    };
    RedisClusterStore::connect(url, options, PayloadCodec::sealed(ring()))
        .await
        .expect("cluster store")
}

fn fresh_prefix() -> String {
    format!("pctest:{}:", random_token(9))
}

/// Every contract check, plain and behind the local cache, one after the
/// other on one cluster (starting a cluster per check would be slow).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_suite_runs_on_a_3_master_cluster() {
    contract_suite(&LocalCluster::start()).await;
}

async fn contract_suite(cluster: &LocalCluster) {
    let url = cluster.url();
    crate::session_store_contract_tests!(serial async {
        Arc::new(store_at(&url, &fresh_prefix()).await) as Arc<dyn SessionStore>
    });
    crate::session_store_contract_tests!(serial async {
        let store = store_at(&url, &fresh_prefix()).await;
        let bus = store.invalidation_bus();
        Arc::new(CachedStore::new(Arc::new(store), Some(bus), CacheOptions::default()))
            as Arc<dyn SessionStore>
    });
}

/// The record and its lease share a hash slot; indexes need not.
#[tokio::test]
async fn record_and_lease_share_a_slot() {
    let cluster = LocalCluster::start();
    let store = store_at(&cluster.url(), &fresh_prefix()).await;
    let (_, record) = sample_record("alice", Some("sid-1"), SystemClock.now());
    let id = record.id.as_str();
    let slot = |key: String| -> i64 {
        cluster
            .query(
                cluster.ports[0],
                redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
            )
            .expect("slot")
    };
    assert_eq!(slot(store.record_key(id)), slot(store.lease_key(id)));
}

/// Readers prune index entries whose record is gone, but only once they
/// are past the grace period: a younger one may be a save between its index
/// step and its record step. Live entries stay whatever their age.
#[tokio::test]
async fn stale_index_entries_are_pruned_after_the_grace() {
    use super::super::index::INDEX_PRUNE_GRACE_MS;
    let cluster = LocalCluster::start();
    let store = store_at(&cluster.url(), &fresh_prefix()).await;
    let (_, live) = sample_record("alice", None, SystemClock.now());
    store.save(&live).await.expect("save");
    let index = format!("{}u:alice", store.prefix());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let old = format!("{}.x", now_ms - INDEX_PRUNE_GRACE_MS - 1000);
    let mut conn = store.connection();
    let entries = [("ghost-old", old.as_str()), ("ghost-young", &new_stamp())];
    let (): () = conn.hset_multiple(&index, &entries).await.expect("hset");
    let fields = async |conn: &mut ClusterConnection| {
        let mut ids: Vec<String> = conn.hkeys(&index).await.expect("hkeys");
        ids.sort();
        ids
    };

    assert_eq!(
        store.list_by_sub("alice").await.expect("list"),
        vec![live.clone()]
    );
    let mut expected = vec!["ghost-young".to_owned(), live.id.as_str().to_owned()];
    expected.sort();
    assert_eq!(fields(&mut conn).await, expected);

    // Only real sessions are counted; the young ghost waits for its grace.
    assert_eq!(store.delete_by_sub("alice").await.expect("delete"), 1);
    assert_eq!(fields(&mut conn).await, ["ghost-young"]);
}

/// Two replicas, each with its local cache: a delete on one reaches the
/// other's cache through the cluster's pub/sub, not through the cache TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_a_cluster_see_each_others_delete() {
    replicas_see_each_others_delete(&LocalCluster::start()).await;
}

async fn replicas_see_each_others_delete(cluster: &LocalCluster) {
    let url = cluster.url();
    let prefix = fresh_prefix();
    let cache = CacheOptions {
        ttl: Duration::from_secs(3600),
        ..CacheOptions::default()
    };
    let replica = || async {
        let store = store_at(&url, &prefix).await;
        let bus = store.invalidation_bus();
        CachedStore::new(Arc::new(store), Some(bus), cache)
    };
    let (a, b) = (replica().await, replica().await);
    // Both subscribers listen on the first seed before anything is published.
    let channel = format!("{prefix}invalidate");
    wait_until("both replicas to subscribe", || {
        cluster
            .query::<(String, i64)>(
                cluster.ports[0],
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel),
            )
            .is_ok_and(|(_, n)| n >= 2)
    });

    let (_, record) = sample_record("alice", None, SystemClock.now());
    a.save(&record).await.expect("save on a");
    assert_eq!(
        b.load(&record.id).await.expect("load on b"),
        Some(record.clone())
    );
    assert!(a.delete(&record.id).await.expect("delete on a"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.load(&record.id).await.expect("load on b").is_some() {
        assert!(
            Instant::now() < deadline,
            "b still serves the deleted session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When the node the subscriber listens on dies, it moves to another seed
/// and invalidations keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_subscriber_moves_to_another_seed() {
    let mut cluster = LocalCluster::start();
    let url = cluster.url();
    let prefix = fresh_prefix();
    let store = store_at(&url, &prefix).await;
    let bus = store.invalidation_bus();
    let mut rx = crate::session::cache::InvalidationBus::subscribe(&*bus);
    let channel = format!("{prefix}invalidate");
    let subscribed = |cluster: &LocalCluster, port: u16| {
        cluster
            .query::<(String, i64)>(port, redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel))
            .is_ok_and(|(_, n)| n >= 1)
    };
    wait_until("the subscriber on the first seed", || {
        subscribed(&cluster, cluster.ports[0])
    });
    cluster.kill_node(0);
    wait_until("the subscriber on another seed", || {
        subscribed(&cluster, cluster.ports[1]) || subscribed(&cluster, cluster.ports[2])
    });
    // Published through another node: the subscriber hears it.
    let port = cluster.ports[1];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let _: i64 = cluster
            .query(port, redis::cmd("PUBLISH").arg(&channel).arg("s:ping"))
            .expect("publish");
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Ok(crate::session::cache::Invalidation::All)) | Err(_) => {}
            Ok(Ok(_)) => break,
            Ok(Err(e)) => panic!("bus closed: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "no invalidation after the node died"
        );
    }
}

/// A seed list whose first node is down still connects through the others.
#[tokio::test]
async fn cluster_url_with_first_seed_down_connects() {
    let cluster = LocalCluster::start();
    let dead = free_ports(1)[0];
    let url = format!("redis+cluster://127.0.0.1:{dead},{}", cluster.seeds());
    let store = store_at(&url, &fresh_prefix()).await;
    let (_, record) = sample_record("alice", None, SystemClock.now());
    store.save(&record).await.expect("save");
    assert_eq!(store.load(&record.id).await.expect("load"), Some(record));
}

#[test]
fn cluster_urls_are_parsed_without_echoing_passwords() {
    assert_eq!(
        cluster_nodes("redis+cluster://h1:7000,h2:7001").expect("nodes"),
        ["redis://h1:7000/", "redis://h2:7001/"]
    );
    assert_eq!(
        cluster_nodes("rediss+cluster://u:pw@h1:7000,h2:7001/?protocol=resp3").expect("nodes"),
        [
            "rediss://u:pw@h1:7000/?protocol=resp3",
            "rediss://u:pw@h2:7001/?protocol=resp3"
        ]
    );
    for bad in [
        "redis+cluster://",
        "redis+cluster://u:pw@h1:7000/3",
        "redis://u:pw@h1",
    ] {
        match cluster_nodes(bad) {
            Err(StoreError::BadUrl(msg)) => assert!(!msg.contains("pw"), "{msg}"),
            other => panic!("{bad}: expected BadUrl, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn braces_in_the_key_prefix_are_refused() {
    let options = RedisOptions {
        key_prefix: "app{1}:".into(),
        ..RedisOptions::default()
    };
    let result = RedisClusterStore::connect(
        "redis+cluster://127.0.0.1:1",
        options,
        PayloadCodec::plain(),
    )
    .await;
    assert!(matches!(result, Err(StoreError::BadUrl(_))));
}
