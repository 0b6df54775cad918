// `zctl cluster`'s client: requests, the node's JSON, the table, what each
// answer means (redirect, outcome), all pure; the redirect loop with a
// scripted transport; and one exchange over loopback sockets (the last test),
// for the headers that go on the wire.
#include <catch2/catch.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <string>
#include <thread>
#include <vector>

#include "zctl/core/admin_http.hpp"
#include "zctl/core/cluster_client.hpp"

using namespace zctl;

namespace {

const std::string kFollowerView = R"({"id":"ctrl2","state":"follower","term":7,"commitIndex":123,"hasLeader":true,
  "leaderId":"ctrl1","lastContactSeconds":0.04,
  "members":[
    {"id":"ctrl1","raftAddr":"127.0.0.1:6263","meshAddr":"127.0.0.1:6262","adminAddr":"127.0.0.1:6280",
     "voter":true,"leader":true,"connected":true,"lastContactSeconds":0.04},
    {"id":"ctrl2","raftAddr":"127.0.0.1:6363","meshAddr":"127.0.0.1:6362","adminAddr":"127.0.0.1:6380",
     "voter":true,"leader":false,"connected":null,"lastContactSeconds":null},
    {"id":"ctrl3","raftAddr":"10.0.0.3:6263","meshAddr":"","adminAddr":"",
     "voter":false,"leader":false,"connected":false,"lastContactSeconds":12.5}],
  "authorized":["ctrl4","ctrl5"]})";

AdminHttpResponse answer(int status, std::string body, std::string location = {}) {
  AdminHttpResponse a;
  a.answered = true;
  a.status = status;
  a.body = std::move(body);
  a.location = std::move(location);
  return a;
}

AdminHttpResponse no_answer(std::string why) {
  AdminHttpResponse a;
  a.transport_error = std::move(why);
  return a;
}

// A transport that records each request and answers from a script.
struct ScriptedNodes {
  struct Sent {
    std::string url;
    AdminHttpRequest request;
  };
  std::vector<AdminHttpResponse> answers;
  std::vector<Sent> sent;

  AdminTransport transport() {
    return [this](const AdminAddress& node, const AdminHttpRequest& request) {
      sent.push_back({node.url(), request});
      REQUIRE(sent.size() <= answers.size());
      return answers[sent.size() - 1];
    };
  }
};

}  // namespace

TEST_CASE("cluster requests: method, target and JSON body per command", "[cluster_cli]") {
  auto r = build_cluster_request(ClusterCommand::list, "");
  CHECK(r.method == "GET");
  CHECK(r.target == "/v1/cluster");
  CHECK(r.body.empty());

  r = build_cluster_request(ClusterCommand::add, "ctrl4");
  CHECK(r.method == "POST");
  CHECK(r.target == "/v1/cluster/members");
  CHECK(r.body == R"({"id":"ctrl4"})");

  r = build_cluster_request(ClusterCommand::remove, "ctrl3");
  CHECK(r.method == "DELETE");
  CHECK(r.target == "/v1/cluster/members/ctrl3");
  CHECK(r.body.empty());

  r = build_cluster_request(ClusterCommand::transfer_leadership, "");
  CHECK(r.method == "POST");
  CHECK(r.target == "/v1/cluster/transfer-leadership");
  CHECK(r.body == "{}");
  CHECK(build_cluster_request(ClusterCommand::transfer_leadership, "ctrl2").body == R"({"id":"ctrl2"})");

  // Whatever the id, the request stays one path segment and valid JSON; the node judges the id.
  CHECK(build_cluster_request(ClusterCommand::remove, "../x y").target == "/v1/cluster/members/..%2Fx%20y");
  CHECK(build_cluster_request(ClusterCommand::add, "a\"b").body == R"({"id":"a\"b"})");
  CHECK(to_string(ClusterCommand::transfer_leadership) == "transfer-leadership");
}

TEST_CASE("cluster view: every field of GET /v1/cluster, nulls as unknown", "[cluster_cli]") {
  std::string error;
  const auto view = parse_cluster_listing(kFollowerView, error);
  REQUIRE(view);
  CHECK(error.empty());
  CHECK(view->id == "ctrl2");
  CHECK(view->state == "follower");
  CHECK(view->term == 7);
  CHECK(view->commit_index == 123);
  CHECK(view->has_leader);
  CHECK(view->leader_id == "ctrl1");
  CHECK(view->last_contact_seconds == Approx(0.04));
  REQUIRE(view->members.size() == 3);
  const ClusterListing::Member& leader = view->members[0];
  CHECK(leader.id == "ctrl1");
  CHECK(leader.raft_addr == "127.0.0.1:6263");
  CHECK(leader.mesh_addr == "127.0.0.1:6262");
  CHECK(leader.admin_addr == "127.0.0.1:6280");
  CHECK(leader.voter);
  CHECK(leader.leader);
  CHECK(leader.connected == true);
  const ClusterListing::Member& self = view->members[1];
  CHECK_FALSE(self.connected.has_value());
  CHECK_FALSE(self.last_contact_seconds.has_value());
  CHECK(view->members[2].connected == false);
  CHECK(view->members[2].mesh_addr.empty());
  CHECK(view->authorized == std::vector<std::string>{"ctrl4", "ctrl5"});

  const auto leaderless =
      parse_cluster_listing(R"({"id":"c1","state":"candidate","term":3,"commitIndex":9,"hasLeader":false,)"
                            R"("leaderId":null,"lastContactSeconds":null,"members":[]})",
                            error);
  REQUIRE(leaderless);
  CHECK_FALSE(leaderless->leader_id);
  CHECK_FALSE(leaderless->last_contact_seconds);
  CHECK(leaderless->members.empty());
  CHECK(leaderless->authorized.empty());  // absent is none
}

TEST_CASE("cluster view: what is not a view is refused with the reason", "[cluster_cli]") {
  std::string error;
  CHECK_FALSE(parse_cluster_listing("not json", error));
  CHECK(error == "the node's answer is not a JSON object");
  CHECK_FALSE(parse_cluster_listing("[]", error));
  CHECK_FALSE(parse_cluster_listing(R"({"state":"leader","members":[]})", error));
  CHECK(error == "the node's answer is not a cluster view: \"id\" is missing");
  CHECK_FALSE(parse_cluster_listing(R"({"id":"a","state":"leader"})", error));
  CHECK(error.find("\"members\" is not an array") != std::string::npos);
  CHECK_FALSE(parse_cluster_listing(R"({"id":"a","state":"leader","term":-1,"members":[]})", error));
  CHECK(error.find("\"term\" is not a non-negative integer") != std::string::npos);
  CHECK_FALSE(parse_cluster_listing(R"({"id":"a","state":"leader","members":[{"id":"a","connected":"yes"}]})", error));
  CHECK(error.find("members[0].\"connected\" is not true, false or null") != std::string::npos);
  CHECK_FALSE(parse_cluster_listing(R"({"id":"a","state":"leader","members":[7]})", error));
  CHECK(error.find("members[0] is not an object") != std::string::npos);
  CHECK_FALSE(parse_cluster_listing(R"({"id":"a","state":"leader","members":[],"authorized":[1]})", error));
  CHECK(error.find("\"authorized\" is not an array of node ids") != std::string::npos);
}

TEST_CASE("cluster table: summary, aligned columns, the node's own row, authorized ids", "[cluster_cli]") {
  std::string error;
  const auto view = parse_cluster_listing(kFollowerView, error);
  REQUIRE(view);
  CHECK(format_cluster_table(*view) ==
        "ctrl2: follower, term 7, commit index 123; leader ctrl1, last contact 40ms\n"
        "\n"
        "ID     RAFT            MESH            VOTER  LEADER  CONNECTED  LAST CONTACT\n"
        "ctrl1  127.0.0.1:6263  127.0.0.1:6262  yes    yes     yes        40ms\n"
        "ctrl2  127.0.0.1:6363  127.0.0.1:6362  yes    no      self       -\n"
        "ctrl3  10.0.0.3:6263   -               no     no      no         12.5s\n"
        "\n"
        "authorized to join, not members yet: ctrl4, ctrl5\n");

  ClusterListing leader;
  leader.id = "c1";
  leader.state = "leader";
  leader.term = 1;
  leader.commit_index = 2;
  leader.has_leader = true;
  leader.leader_id = "c1";
  leader.members.push_back({"c1", "127.0.0.1:6263", "127.0.0.1:6262", "", true, true, std::nullopt, std::nullopt});
  CHECK(format_cluster_table(leader) ==
        "c1: leader, term 1, commit index 2\n\n"
        "ID  RAFT            MESH            VOTER  LEADER  CONNECTED  LAST CONTACT\n"
        "c1  127.0.0.1:6263  127.0.0.1:6262  yes    yes     self       -\n");

  ClusterListing lost;
  lost.id = "c2";
  lost.state = "unavailable";
  CHECK(format_cluster_table(lost) == "c2: unavailable, term 0, commit index 0; no leader\n\nno members\n");
}

TEST_CASE("cluster changes: one line per answer, the body when it is unexpected", "[cluster_cli]") {
  CHECK(describe_cluster_change(ClusterCommand::add, R"({"authorized":"ctrl4"})") ==
        "authorized ctrl4 to join: start it with zctl serve --id ctrl4 --join HOST:PORT (a member's mesh address)");
  CHECK(describe_cluster_change(ClusterCommand::remove, R"({"removed":"ctrl3","index":57})") ==
        "removed ctrl3 from the cluster (raft log index 57)");
  CHECK(describe_cluster_change(ClusterCommand::remove, R"({"removed":"ctrl3"})") == "removed ctrl3 from the cluster");
  CHECK(describe_cluster_change(ClusterCommand::transfer_leadership, R"({"leaderId":"ctrl2"})") ==
        "leadership handed over to ctrl2");
  CHECK(describe_cluster_change(ClusterCommand::transfer_leadership, "{\"done\":true}\n") == "{\"done\":true}");
  CHECK(describe_cluster_change(ClusterCommand::add, "ok") == "ok");
}

TEST_CASE("cluster answers: status and error body decide the outcome", "[cluster_cli]") {
  auto r = classify_answer(answer(200, R"({"authorized":"ctrl4"})"));
  CHECK(r.outcome == ClusterOutcome::ok);
  CHECK(r.detail.empty());
  CHECK(r.body == R"({"authorized":"ctrl4"})");

  r = classify_answer(answer(404, R"({"error":"not_member","detail":"ctrl9 is not a member"})"));
  CHECK(r.outcome == ClusterOutcome::refused);
  CHECK(r.error == "not_member");
  CHECK(r.detail == "ctrl9 is not a member");
  CHECK(r.status == 404);

  CHECK(classify_answer(answer(503, R"({"error":"no_leader","detail":"no leader"})")).outcome ==
        ClusterOutcome::refused);
  CHECK(classify_answer(answer(401, R"({"error":"unauthorized","detail":"token"})")).outcome ==
        ClusterOutcome::refused);
  CHECK(classify_answer(answer(409, R"({"error":"conflict"})")).detail == "conflict");  // no detail: the code
  CHECK(classify_answer(answer(400, R"({"error":"bad_request","detail":"invalid id"})")).outcome ==
        ClusterOutcome::bad_request);
  CHECK(classify_answer(answer(500, R"({"error":"internal","detail":"boom"})")).outcome == ClusterOutcome::failed);

  AdminHttpResponse proxy = answer(502, "<html>\nbad gateway\n</html>\n");
  proxy.reason = "Bad Gateway";
  r = classify_answer(proxy);
  CHECK(r.outcome == ClusterOutcome::failed);
  CHECK(r.detail == "node answered 502 Bad Gateway: <html> bad gateway </html>");

  r = classify_answer(no_answer("Connection refused"));
  CHECK(r.outcome == ClusterOutcome::unreachable);
  CHECK(r.detail == "Connection refused");
}

TEST_CASE("cluster redirects: follow one 307 to the same request on an http URL", "[cluster_cli]") {
  const AdminHttpRequest sent = build_cluster_request(ClusterCommand::remove, "ctrl3");
  const std::string not_leader = R"({"error":"not_leader","detail":"ctrl2 is not the leader","leaderId":"ctrl1"})";

  CHECK(decide_redirect(answer(200, "{}"), sent, false).action == RedirectDecision::Action::accept);
  CHECK(decide_redirect(answer(404, "{}"), sent, true).action == RedirectDecision::Action::accept);
  CHECK(decide_redirect(no_answer("timeout"), sent, false).action == RedirectDecision::Action::accept);

  auto d = decide_redirect(answer(307, not_leader, "http://127.0.0.1:6281/v1/cluster/members/ctrl3"), sent, false);
  REQUIRE(d.action == RedirectDecision::Action::follow);
  CHECK(d.to.address.host == "127.0.0.1");
  CHECK(d.to.address.port == "6281");
  CHECK(d.to.target == sent.target);

  d = decide_redirect(answer(307, not_leader, "http://[::1]:6281/v1/cluster/members/ctrl3"), sent, false);
  REQUIRE(d.action == RedirectDecision::Action::follow);
  CHECK(d.to.address.url() == "http://[::1]:6281");

  // A second redirect: leadership moved while forwarding.
  d = decide_redirect(answer(307, not_leader, "http://127.0.0.1:6282/v1/cluster/members/ctrl3"), sent, true);
  CHECK(d.action == RedirectDecision::Action::refuse);
  CHECK(d.detail.find("ctrl2 is not the leader") == 0);
  CHECK(d.detail.find("try again") != std::string::npos);

  d = decide_redirect(answer(307, not_leader), sent, false);
  CHECK(d.action == RedirectDecision::Action::refuse);
  CHECK(d.detail == "ctrl2 is not the leader (and it named no leader to redirect to)");

  d = decide_redirect(answer(307, not_leader, "https://10.0.0.1:6280/v1/cluster/members/ctrl3"), sent, false);
  CHECK(d.action == RedirectDecision::Action::follow);
  CHECK(d.to.address.https);
  CHECK(d.to.address.url() == "https://10.0.0.1:6280");
  // Never from https down to http: the request and its token would travel in the clear.
  d = decide_redirect(answer(307, not_leader, "http://10.0.0.1:6280/v1/cluster/members/ctrl3"), sent, false, true);
  CHECK(d.action == RedirectDecision::Action::fail);
  CHECK(d.detail.find("it leaves https for plain http") != std::string::npos);
  d = decide_redirect(answer(307, not_leader, "ftp://10.0.0.1/v1/cluster/members/ctrl3"), sent, false);
  CHECK(d.action == RedirectDecision::Action::fail);
  CHECK(d.detail.find("cannot follow the redirect to the leader") == 0);
  CHECK(decide_redirect(answer(307, not_leader, "/v1/cluster/members/ctrl3"), sent, false).action ==
        RedirectDecision::Action::fail);

  d = decide_redirect(answer(307, not_leader, "http://10.0.0.1:6280/v1/cluster/members/ctrl4"), sent, false);
  CHECK(d.action == RedirectDecision::Action::fail);
  CHECK(d.detail.find("not the same request (DELETE /v1/cluster/members/ctrl3)") != std::string::npos);
}

TEST_CASE("cluster calls: the leader gets the same method, body and token, once", "[cluster_cli]") {
  const AdminAddress follower = parse_admin_url("http://127.0.0.1:6380");
  AdminHttpRequest request = build_cluster_request(ClusterCommand::add, "ctrl4");
  request.bearer_token = "s3cret";
  const std::string not_leader = R"({"error":"not_leader","detail":"ctrl2 is not the leader","leaderId":"ctrl1"})";

  SECTION("redirected once, then answered") {
    ScriptedNodes nodes;
    nodes.answers = {answer(307, not_leader, "http://127.0.0.1:6280/v1/cluster/members"),
                     answer(200, R"({"authorized":"ctrl4"})")};
    const auto r = call_cluster_api(follower, request, nodes.transport());
    CHECK(r.outcome == ClusterOutcome::ok);
    CHECK(r.redirected);
    CHECK(r.answered_by == "http://127.0.0.1:6280");
    CHECK(r.body == R"({"authorized":"ctrl4"})");
    REQUIRE(nodes.sent.size() == 2);
    CHECK(nodes.sent[0].url == "http://127.0.0.1:6380");
    CHECK(nodes.sent[1].url == "http://127.0.0.1:6280");
    CHECK(nodes.sent[1].request.method == "POST");
    CHECK(nodes.sent[1].request.target == "/v1/cluster/members");
    CHECK(nodes.sent[1].request.body == R"({"id":"ctrl4"})");
    CHECK(nodes.sent[1].request.bearer_token == "s3cret");
  }
  SECTION("answered directly") {
    ScriptedNodes nodes;
    nodes.answers = {answer(404, R"({"error":"not_member","detail":"ctrl4 is not a member"})")};
    const auto r = call_cluster_api(follower, request, nodes.transport());
    CHECK(r.outcome == ClusterOutcome::refused);
    CHECK_FALSE(r.redirected);
    CHECK(r.detail == "ctrl4 is not a member");
    CHECK(nodes.sent.size() == 1);
  }
  SECTION("redirected twice: refused, not followed again") {
    ScriptedNodes nodes;
    nodes.answers = {answer(307, not_leader, "http://127.0.0.1:6280/v1/cluster/members"),
                     answer(307, not_leader, "http://127.0.0.1:6480/v1/cluster/members")};
    const auto r = call_cluster_api(follower, request, nodes.transport());
    CHECK(r.outcome == ClusterOutcome::refused);
    CHECK(r.status == 307);
    CHECK(r.detail.find("leadership is changing, try again") != std::string::npos);
    CHECK(nodes.sent.size() == 2);
  }
  SECTION("no leader") {
    ScriptedNodes nodes;
    nodes.answers = {answer(503, R"({"error":"no_leader","detail":"the cluster has no leader"})")};
    const auto r = call_cluster_api(follower, request, nodes.transport());
    CHECK(r.outcome == ClusterOutcome::refused);
    CHECK(r.detail == "the cluster has no leader");
  }
  SECTION("the node cannot be reached") {
    ScriptedNodes nodes;
    nodes.answers = {no_answer("Connection refused")};
    const auto r = call_cluster_api(follower, request, nodes.transport());
    CHECK(r.outcome == ClusterOutcome::unreachable);
    CHECK(r.detail == "cannot reach http://127.0.0.1:6380: Connection refused");
  }
  SECTION("the leader it redirects to cannot be reached") {
    ScriptedNodes nodes;
    nodes.answers = {answer(307, not_leader, "http://127.0.0.1:6280/v1/cluster/members"),
                     no_answer("Connection refused")};
    const auto r = call_cluster_api(follower, request, nodes.transport());
    CHECK(r.outcome == ClusterOutcome::unreachable);
    CHECK(r.detail ==
          "cannot reach the leader ctrl1 at http://127.0.0.1:6280 (redirected by http://127.0.0.1:6380): "
          "Connection refused");
  }
}

TEST_CASE("admin URLs: --node forms, Location headers, what is refused", "[cluster_cli]") {
  auto a = parse_admin_url("http://127.0.0.1:7000/");
  CHECK(a.host == "127.0.0.1");
  CHECK(a.port == "7000");
  CHECK(a.url() == "http://127.0.0.1:7000");
  a = parse_admin_url("localhost");
  CHECK(a.port == "6280");
  a = parse_admin_url("[::1]:6281");
  CHECK(a.host == "::1");
  CHECK(a.url() == "http://[::1]:6281");
  a = parse_admin_url("https://x:1");
  CHECK((a.https && a.host == "x" && a.port == "1" && a.url() == "https://x:1"));
  CHECK_FALSE(parse_admin_url("http://x:1").https);
  CHECK_THROWS_AS(parse_admin_url("ftp://x:1"), std::invalid_argument);
  CHECK_THROWS_AS(parse_admin_url("http://x:1/v1/cluster"), std::invalid_argument);
  CHECK_THROWS_AS(parse_admin_url("http://:1"), std::invalid_argument);

  const auto l = parse_http_location("http://10.0.0.1:6280/v1/cluster/members/ctrl3");
  CHECK(l.address.host == "10.0.0.1");
  CHECK(l.address.port == "6280");
  CHECK(l.target == "/v1/cluster/members/ctrl3");
  CHECK(parse_http_location("http://leader").target == "/");
  CHECK(parse_http_location("http://leader").address.port == "80");
  CHECK_THROWS_AS(parse_http_location("/v1/cluster"), std::invalid_argument);
  const auto secure = parse_http_location("https://leader/v1/cluster");
  CHECK((secure.address.https && secure.address.port == "443" && secure.target == "/v1/cluster"));
  CHECK(percent_encode("a b/c~d") == "a%20b%2Fc~d");
}

TEST_CASE("admin requests over loopback: headers, body and the whole answer (uses sockets)", "[cluster_cli]") {
  namespace asio = boost::asio;
  using asio::ip::tcp;
  asio::io_context server_io;
  tcp::acceptor acceptor(server_io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const std::string port = std::to_string(acceptor.local_endpoint().port());
  std::string received;
  std::thread server([&] {
    tcp::socket socket(server_io);
    acceptor.accept(socket);
    asio::streambuf buffer;
    boost::system::error_code ec;
    const size_t head = asio::read_until(socket, buffer, "\r\n\r\n", ec);
    received.assign(asio::buffers_begin(buffer.data()), asio::buffers_end(buffer.data()));
    const size_t length_at = received.find("Content-Length: ");
    const size_t length = length_at == std::string::npos ? 0 : std::stoul(received.substr(length_at + 16));
    if (received.size() < head + length) {
      asio::read(socket, buffer, asio::transfer_exactly(head + length - received.size()), ec);
      received.assign(asio::buffers_begin(buffer.data()), asio::buffers_end(buffer.data()));
    }
    const std::string body = R"({"error":"not_leader","detail":"ask ctrl1","leaderId":"ctrl1"})";
    const std::string reply =
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:1/v1/cluster/members\r\n"
        "Content-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    asio::write(socket, asio::buffer(reply), ec);
  });

  AdminHttpRequest request = build_cluster_request(ClusterCommand::add, "ctrl4");
  request.bearer_token = "s3cret";
  const AdminHttpResponse a = send_admin_request(parse_admin_url("127.0.0.1:" + port), request);
  server.join();
  REQUIRE(a.answered);
  CHECK(a.status == 307);
  CHECK(a.reason == "Temporary Redirect");
  CHECK(a.location == "http://127.0.0.1:1/v1/cluster/members");
  CHECK(a.body == R"({"error":"not_leader","detail":"ask ctrl1","leaderId":"ctrl1"})");
  CHECK(received.rfind("POST /v1/cluster/members HTTP/1.1\r\n", 0) == 0);
  CHECK(received.find("\r\nHost: 127.0.0.1:" + port + "\r\n") != std::string::npos);
  CHECK(received.find("\r\nAuthorization: Bearer s3cret\r\n") != std::string::npos);
  CHECK(received.find("\r\nContent-Type: application/json\r\n") != std::string::npos);
  CHECK(received.substr(received.size() - 14) == R"({"id":"ctrl4"})");

  // The port is closed now: no answer, and why.
  acceptor.close();
  const AdminHttpResponse refused = send_admin_request(parse_admin_url("127.0.0.1:" + port), request);
  CHECK_FALSE(refused.answered);
  CHECK_FALSE(refused.transport_error.empty());
}
