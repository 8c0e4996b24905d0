-- wrk script: the blocked-flood workload. The registration of bench/post.lua, sent by a client
-- every system under test blocks by its User-Agent (the gateway's `block-flood-ua` rule from
-- examples/bench_fixtures.rs, nginx `if ($http_user_agent ~ ^flood-bot/)`, HAProxy
-- `req.hdr(user-agent) -m beg flood-bot/`): every answer is a 403, written by the proxy itself.
-- Usage: wrk -s bench/flood.lua http://127.0.0.1:PORT/oidc/register
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "flood-bot/1.0"
wrk.body = [[{"client_name":"Sample Desktop MCP Connector (bench)","redirect_uris":["http://127.0.0.1:33418/oauth/callback","https://agent.example.com/mcp/oauth/callback"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none","scope":"openid profile email offline_access","client_uri":"https://agent.example.com","logo_uri":"https://agent.example.com/static/logo-256.png","contacts":["security@agent.example.com","ops@agent.example.com"],"software_id":"4f9c1e2a-7b3d-4c8e-9a1f-2d6e8b0c5a71","software_version":"1.4.2"}]]
