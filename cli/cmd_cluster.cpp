#include <iostream>

#include "commands.hpp"
#include "zctl/core/cluster_client.hpp"

namespace zctl::cli {

namespace {

struct ClusterCliOptions {
  std::string node = "http://127.0.0.1:6280";
  std::string token_file;
  TlsClientFiles tls;
  std::string output;
  std::string id;  // add, remove: the member; transfer-leadership: the target ("" = the leader chooses)
};

int exit_code(ClusterOutcome outcome) {
  switch (outcome) {
    case ClusterOutcome::ok:
      return kExitOk;
    case ClusterOutcome::refused:
      return kExitRefused;
    case ClusterOutcome::bad_request:
      return kExitUsage;
    case ClusterOutcome::unreachable:
      return kExitUnreachable;
    case ClusterOutcome::failed:
      return kExitRuntime;
  }
  return kExitRuntime;
}

int run_cluster_command(ClusterCommand command, const ClusterCliOptions& o) {
  const std::string prefix = "zctl cluster " + std::string(to_string(command)) + ": ";
  AdminAddress node;
  try {
    node = parse_admin_url(o.node);
  } catch (const std::invalid_argument& e) {
    std::cerr << prefix << e.what() << "\n";
    return kExitUsage;
  }
  if ((command == ClusterCommand::add || command == ClusterCommand::remove) && o.id.empty()) {
    std::cerr << prefix << "ID must not be empty\n";
    return kExitUsage;
  }
  AdminHttpRequest request = build_cluster_request(command, o.id);
  request.tls = o.tls;
  if (!o.token_file.empty()) {
    auto token = read_token_file(o.token_file);
    if (!token) {
      std::cerr << prefix << "cannot read token file " << o.token_file << "\n";
      return kExitUsage;
    }
    request.bearer_token = std::move(*token);
  }

  const ClusterCallResult result = call_cluster_api(node, request);
  if (result.outcome != ClusterOutcome::ok) {
    std::cerr << prefix << result.detail << "\n";
    return exit_code(result.outcome);
  }
  const bool json = o.output.empty() ? !stdout_is_terminal() : o.output == "json";
  if (json) {
    std::string body = result.body;
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    std::cout << body << "\n";
  } else if (command == ClusterCommand::list) {
    std::string error;
    const auto listing = parse_cluster_listing(result.body, error);
    if (!listing) {
      std::cerr << prefix << error << "\n";
      return kExitRuntime;
    }
    std::cout << format_cluster_table(*listing);
  } else {
    if (result.redirected) std::cout << "redirected to the leader at " << result.answered_by << "\n";
    std::cout << describe_cluster_change(command, result.body) << "\n";
  }
  std::cout.flush();
  return kExitOk;
}

// --node, --token-file, the TLS files and -o, the same on every subcommand.
void add_connection_options(CLI::App& cmd, ClusterCliOptions& o, const char* output_help) {
  cmd.add_option("--node", o.node, "Admin API URL of the node to ask")->capture_default_str();
  cmd.add_option("--token-file", o.token_file, "File holding the admin API bearer token")->check(CLI::ExistingFile);
  add_admin_tls_options(cmd, o.tls);
  cmd.add_option("-o,--output", o.output, output_help)->check(CLI::IsMember({"table", "json"}));
}

constexpr const char* kExitStatus =
    "Exit status: 0 done; 1 the node refused (not a member, no leader, a missing or wrong token, ...);\n"
    "2 usage error, or a request the node calls malformed; 3 the node (or the leader it redirected to)\n"
    "cannot be reached; 4 any other failure.";

}  // namespace

Runner register_cluster(CLI::App& app) {
  auto o = std::make_shared<ClusterCliOptions>();
  auto* cmd = app.add_subcommand("cluster", "Show and change the members of the cluster through a node's admin API");
  cmd->require_subcommand(1);
  cmd->footer(
      "Any member answers list; add, remove and transfer-leadership go to the leader: a member that\n"
      "is not the leader redirects, and the request is sent once more, to the leader it names.\n\n"
      "Examples:\n"
      "  zctl cluster list\n"
      "  zctl cluster add ctrl4 --node http://10.0.0.1:6280\n"
      "  zctl cluster remove ctrl3\n"
      "  zctl cluster transfer-leadership ctrl2");

  auto* list = cmd->add_subcommand("list", "Show the node's view: state, term, leader, members and connectivity");
  list->footer(std::string("Examples:\n"
                           "  zctl cluster list\n"
                           "  zctl cluster list --node http://10.0.0.2:6280 --token-file /etc/zctl/admin-token\n"
                           "  zctl cluster list -o json | jq -r '.members[] | select(.connected == false) | .id'\n\n") +
               kExitStatus);
  add_connection_options(*list, *o, "table (default on a terminal) or json (the node's answer as it is)");

  auto* add = cmd->add_subcommand("add", "Authorize a node id to join the cluster through the mesh");
  add->footer(
      std::string("The node then joins by itself: zctl serve --id ID --join HOST:PORT (a member's mesh\n"
                  "address). It shows in list as authorized until it has joined.\n\n"
                  "Examples:\n"
                  "  zctl cluster add ctrl4\n"
                  "  zctl cluster add ctrl4 --node http://10.0.0.1:6280 --token-file /etc/zctl/admin-token\n\n") +
      kExitStatus);
  add->add_option("ID", o->id, "Node id to authorize (node.id of the joining node)")->required();
  add_connection_options(*add, *o, "table (default on a terminal: one line) or json (the node's answer)");

  auto* remove = cmd->add_subcommand("remove", "Remove a member from the cluster");
  remove->footer(std::string("Examples:\n"
                             "  zctl cluster remove ctrl3\n"
                             "  zctl cluster remove ctrl3 -o json | jq .index\n\n") +
                 kExitStatus);
  remove->add_option("ID", o->id, "Id of the member to remove")->required();
  add_connection_options(*remove, *o, "table (default on a terminal: one line) or json (the node's answer)");

  auto* transfer = cmd->add_subcommand("transfer-leadership", "Hand leadership to another voter");
  transfer->footer(std::string("Without ID the leader picks the voter to hand over to. The answer names the new\n"
                               "leader, or the voter asked to take over while the handover is still under way.\n\n"
                               "Examples:\n"
                               "  zctl cluster transfer-leadership\n"
                               "  zctl cluster transfer-leadership ctrl2\n\n") +
                   kExitStatus);
  transfer->add_option("ID", o->id, "Voter to hand leadership to (default: the leader chooses)");
  add_connection_options(*transfer, *o, "table (default on a terminal: one line) or json (the node's answer)");

  return [o, list, add, remove]() -> int {
    const ClusterCommand command = list->parsed()     ? ClusterCommand::list
                                   : add->parsed()    ? ClusterCommand::add
                                   : remove->parsed() ? ClusterCommand::remove
                                                      : ClusterCommand::transfer_leadership;
    return run_cluster_command(command, *o);
  };
}

}  // namespace zctl::cli
