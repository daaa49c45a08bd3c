package dev.clawswarm;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.util.List;
import java.util.Map;
import java.util.function.UnaryOperator;

import org.opensearch.client.node.NodeClient;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.util.concurrent.ThreadContext;
import org.opensearch.core.rest.RestStatus;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.ActionPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.rest.BytesRestResponse;
import org.opensearch.rest.RestChannel;
import org.opensearch.rest.RestHandler;
import org.opensearch.rest.RestRequest;
import org.opensearch.transport.Netty4Plugin;

/**
 * A single-node OpenSearch on loopback for clawswarm's tests: the engine's own
 * jars from Maven Central, started without the distribution's launcher.
 *
 * <p>Usage: {@code SearchEngine HOME [HTTP_PORT [HOST]]} (HOST defaults to
 * 127.0.0.1; a test's pod network gateway lets sandboxed pods reach it). The bound HTTP address is
 * written to {@code HOME/http.addr} once the node serves; the node stops when
 * stdin closes or on SIGTERM.
 *
 * <p>With {@code SEARCH_ENGINE_API_KEY} set, every REST call must carry
 * {@code Authorization: ApiKey <that value>}, as a secured Elasticsearch
 * cluster requires an API key: 401 otherwise. That is what lets a test prove
 * who holds the key.
 */
public final class SearchEngine {
    private static volatile byte[] apiKey;

    /** Checks the API key before any REST handler runs. */
    public static final class RequireApiKey extends Plugin implements ActionPlugin {
        @Override
        public UnaryOperator<RestHandler> getRestHandlerWrapper(ThreadContext threadContext) {
            return handler -> new RestHandler.Wrapper(handler) {
                @Override
                public void handleRequest(RestRequest request, RestChannel channel, NodeClient client) throws Exception {
                    byte[] want = apiKey;
                    if (want != null) {
                        String got = request.header("Authorization");
                        byte[] have = got == null ? new byte[0] : got.getBytes(StandardCharsets.UTF_8);
                        if (!MessageDigest.isEqual(have, want)) {
                            channel.sendResponse(new BytesRestResponse(RestStatus.UNAUTHORIZED, "application/json",
                                "{\"error\":{\"type\":\"security_exception\",\"reason\":\"missing or wrong API key\"},\"status\":401}"));
                            return;
                        }
                    }
                    super.handleRequest(request, channel, client);
                }
            };
        }
    }

    private static final class EngineNode extends Node {
        EngineNode(Settings settings) {
            super(
                InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> "search-0"),
                List.of(Netty4Plugin.class, RequireApiKey.class),
                true);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1 || args.length > 3) {
            System.err.println("usage: SearchEngine HOME [HTTP_PORT [HOST]]");
            System.exit(2);
        }
        String key = System.getenv("SEARCH_ENGINE_API_KEY");
        if (key != null && !key.isEmpty()) {
            apiKey = ("ApiKey " + key).getBytes(StandardCharsets.UTF_8);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        String port = args.length >= 2 ? args[1] : "0";
        String host = args.length == 3 ? args[2] : "127.0.0.1";
        Files.createDirectories(home.resolve("config"));
        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "clawswarm-search")
            .put("node.name", "search-0")
            .put("network.host", "127.0.0.1")
            .put("http.host", host)
            .put("http.port", port)
            .put("transport.port", "0")
            .put("discovery.type", "single-node")
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // A test machine's disk is often nearly full: the engine must not turn read-only for it.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();
        Node node = new EngineNode(settings);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (IOException e) {
                e.printStackTrace();
            }
        }));
        node.start();
        String addr = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress().toString();
        Path tmp = home.resolve("http.addr.tmp");
        Files.writeString(tmp, addr + "\n", StandardCharsets.UTF_8);
        Files.move(tmp, home.resolve("http.addr"), StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        System.out.println("search engine listening on http://" + addr);
        System.out.flush();
        // The parent gone (stdin closed) ends the node, as SIGTERM does: the hook closes it.
        while (System.in.read() != -1) {
        }
        System.exit(0);
    }
}
