/*
  condavault's shipped rule set (docs/scanning.md): every payload file, text or binary

  Every rule carries meta:
    verdict    = "malicious" | "suspicious" | "info"
    capability = "network" | "exec" (info rules only: what install-time code can do, for the version diff)
  External variables set per scanned file:
    filepath        the member path inside the archive (e.g. "bin/.foo-post-link.sh")
    install_script  true for link scripts (pre/post-link, pre-unlink), activate.d and deactivate.d scripts
    startup_hook    true for *.pth files and sitecustomize/usercustomize (run by every Python start)
*/

rule crypto_miner
{
    meta:
        verdict = "malicious"
        description = "a cryptocurrency miner (pool URL, miner name or options)"
    strings:
        $pool1 = /stratum\+(tcp|ssl|tls):\/\//
        $pool2 = /\b(pool\.minexmr\.com|xmr\.nanopool\.org|pool\.supportxmr\.com|xmrpool\.eu|moneroocean\.stream|gulf\.moneroocean|c3pool\.com|hashvault\.pro)\b/
        $xmrig1 = "xmrig" nocase
        $xmrig2 = "--donate-level"
        $xmrig3 = "randomx" nocase
        $xmrig4 = "cryptonight" nocase
    condition:
        any of ($pool*) or (#xmrig1 > 0 and any of ($xmrig2, $xmrig3, $xmrig4))
}

rule eicar_test_file
{
    meta:
        verdict = "malicious"
        description = "the EICAR anti-virus test file"
    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $eicar
}
