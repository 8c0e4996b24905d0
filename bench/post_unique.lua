-- wrk script: POST /oidc/register with bench/body.json's registration made unique per request
-- (client_name and one redirect URI carry a counter and the run's tag), so a gateway with the
-- client registry on records every one and its de-duplication of public clients looks each up
-- and finds none: the registry's full cost per registration.
-- Usage: AB_TAG=some-unique-word wrk -s bench/post_unique.lua http://127.0.0.1:PORT/oidc/register
local tag = os.getenv("AB_TAG") or tostring(os.time())
local n = 0
local body = [[{"client_name":"Sample Desktop MCP Connector (bench %s %d)","redirect_uris":["http://127.0.0.1:33418/oauth/callback","https://agent.example.com/mcp/oauth/callback/%s/%d"],"grant_types":["authorization_code","refresh_token"],"response_types":["code"],"token_endpoint_auth_method":"none","scope":"openid profile email offline_access","client_uri":"https://agent.example.com","logo_uri":"https://agent.example.com/static/logo-256.png","contacts":["security@agent.example.com","ops@agent.example.com"],"software_id":"4f9c1e2a-7b3d-4c8e-9a1f-2d6e8b0c5a71","software_version":"1.4.2"}]]
local headers = { ["Content-Type"] = "application/json", ["User-Agent"] = "mcp-bench/1.0" }
request = function()
  n = n + 1
  return wrk.format("POST", nil, headers, string.format(body, tag, n, tag, n))
end
