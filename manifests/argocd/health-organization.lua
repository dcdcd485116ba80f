-- Argo CD health check for tenantry.dev/Organization, following the kstatus conventions that
-- the operator writes (operator/tenantry/reconcile/status.py). Argo CD runs this with the live
-- object as `obj` and expects {status = ..., message = ...}.
-- Installed as resource.customizations.health.tenantry.dev_Organization (see argocd-cm-patch.yaml,
-- which must embed this file verbatim: tests/unit/test_argocd_health.py checks it).

local hs = { status = "Progressing", message = "Waiting for the operator" }

-- Ready=False with one of these reasons needs a person (fix the spec, the policy or the
-- namespace); any other reason is the operator still working.
local needs_action = {
  InvalidSpec = true,
  PolicyNotFound = true,
  NamespaceConflict = true,
  ApplyFailed = true,
}

local function describe(condition)
  if condition.message ~= nil and condition.message ~= "" then
    return condition.message
  end
  if condition.reason ~= nil and condition.reason ~= "" then
    return condition.reason
  end
  return condition.type .. " is " .. tostring(condition.status)
end

if obj.status == nil then
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata ~= nil and obj.metadata.generation or nil
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  return hs
end

local conditions = {}
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type ~= nil then
      conditions[condition.type] = condition
    end
  end
end

local stalled = conditions["Stalled"]
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local ready = conditions["Ready"]
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  return hs
end

local reconciling = conditions["Reconciling"]
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

if ready ~= nil and ready.status == "False" then
  if needs_action[ready.reason] then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = describe(ready)
  return hs
end

return hs
