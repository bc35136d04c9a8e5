/*
  condavault's shipped rule set (docs/scanning.md): install-time code only (link scripts, activate.d/deactivate.d, startup hooks)

  Every rule carries meta:
    verdict    = "malicious" | "suspicious" | "info"
    capability = "network" | "exec" (info rules only: what install-time code can do, for the version diff)
  External variables set per scanned file:
    filepath        the member path inside the archive (e.g. "bin/.foo-post-link.sh")
    install_script  true for link scripts (pre/post-link, pre-unlink), activate.d and deactivate.d scripts
    startup_hook    true for *.pth files and sitecustomize/usercustomize (run by every Python start)
*/

rule download_and_execute : install_time
{
    meta:
        verdict = "malicious"
        description = "install-time script that downloads something and runs it"
    strings:
        $sh1 = /(curl|wget)[^\n|;]{0,300}\|\s*(sudo\s+)?(ba|z|da|k)?sh\b/
        $sh2 = /(ba|z)?sh\s+-c\s+["']?\$\((curl|wget)/
        $sh3 = /(curl|wget)[^\n]{0,300}(-o|-O|>)\s*\S+\s*(;|&&)\s*(chmod\s+\+x|sh|bash|\.\/|python)/
        $ps1 = /(Invoke-WebRequest|iwr|DownloadString|DownloadFile|Net\.WebClient)[^\n]{0,300}(\|\s*iex|Invoke-Expression|Start-Process)/ nocase
        $ps2 = /certutil(\.exe)?\s+-urlcache/ nocase
        $ps3 = /bitsadmin(\.exe)?\s+\/transfer/ nocase
        $py1 = /urlopen\([^\n]{0,300}\)\.read\(\)[^\n]{0,100}\)/
        $py2 = /exec\s*\(\s*(urllib|requests)[^\n]{0,200}(read\(\)|\.text|\.content)/
    condition:
        (install_script or startup_hook) and any of them
}

rule credential_exfiltration : install_time
{
    meta:
        verdict = "malicious"
        description = "install-time code that reads credentials or tokens and sends them out"
    strings:
        $cred1 = ".aws/credentials"
        $cred2 = ".ssh/id_"
        $cred3 = ".netrc"
        $cred4 = ".pypirc"
        $cred5 = ".docker/config.json"
        $cred6 = ".kube/config"
        $cred7 = /(AWS_SECRET_ACCESS_KEY|GITHUB_TOKEN|GH_TOKEN|NPM_TOKEN|ANACONDA_API_TOKEN|BINSTAR_API_TOKEN|CONDA_TOKEN|PYPI_TOKEN)/
        $cred8 = /\benv\b\s*\|/
        $cred9 = /(printenv|os\.environ\.copy\(\)|dict\(os\.environ\)|json\.dumps\(\s*dict\(os\.environ)/
        $send1 = /(curl|wget)\s[^\n]{0,300}(-d|--data|--data-binary|-F|--upload-file|--post-data|-T)\b/
        $send2 = /(requests\.(post|put)|urlopen\(|http\.client|socket\.connect|Invoke-RestMethod|UploadString)/
        $send3 = /\/dev\/tcp\//
    condition:
        (install_script or startup_hook) and any of ($cred*) and any of ($send*)
}

rule install_network : capability
{
    meta:
        verdict = "info"
        capability = "network"
        description = "install-time code that reaches the network"
    strings:
        $a = /\b(curl|wget|Invoke-WebRequest|Invoke-RestMethod|bitsadmin|certutil)\b/ nocase
        $b = /https?:\/\//
        $c = /\b(urllib|requests|http\.client|socket)\b/
        $d = /\/dev\/tcp\//
    condition:
        install_script and any of them
}

rule install_exec : capability
{
    meta:
        verdict = "info"
        capability = "exec"
        description = "install-time code that evaluates or spawns further code"
    strings:
        $a = /\beval\b/
        $b = /\b(ba|z)?sh\s+-c\b/
        $c = /\bpython[0-9.]*\s+-c\b/
        $d = /\b(subprocess|os\.system|os\.popen|Start-Process|Invoke-Expression|iex)\b/
        $e = /\|\s*(ba|z)?sh\b/
    condition:
        install_script and any of them
}
