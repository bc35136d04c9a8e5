/*
  condavault's shipped rule set (docs/scanning.md): text files (scripts and sources: no NUL byte in their first 8 KiB)

  Every rule carries meta:
    verdict    = "malicious" | "suspicious" | "info"
    capability = "network" | "exec" (info rules only: what install-time code can do, for the version diff)
  External variables set per scanned file:
    filepath        the member path inside the archive (e.g. "bin/.foo-post-link.sh")
    install_script  true for link scripts (pre/post-link, pre-unlink), activate.d and deactivate.d scripts
    startup_hook    true for *.pth files and sitecustomize/usercustomize (run by every Python start)
*/

rule reverse_shell
{
    meta:
        verdict = "malicious"
        description = "a reverse shell (a shell wired to a network socket)"
    strings:
        $a = /\/dev\/(tcp|udp)\/[^\s\/]{1,100}\/[0-9]{1,5}\s+0>&1/
        $a2 = /sh\s+-i\s*>&\s*\/dev\/(tcp|udp)\//
        $b = "<>/dev/tcp/"
        $c = /nc(at)?\s[^\n]{0,40}-e\s+\/bin\/(ba)?sh/
        $d = /mkfifo\s+\/tmp\/[^\n]{0,100}\/bin\/(ba)?sh\s+-i/
        $e = /os\.dup2\([^\n]{0,400}(\/bin\/(ba)?sh|pty\.spawn)/
        $f = /socat\s[^\n]{0,100}exec:['"]?(\/bin\/)?(ba)?sh/
        $g = /System\.Net\.Sockets\.TCPClient[^\n]{0,400}(iex|Invoke-Expression)/
    condition:
        any of them
}

rule obfuscated_exec
{
    meta:
        verdict = "malicious"
        description = "exec/eval of a decoded (base64, zlib, marshal, rot13, hex) blob"
    strings:
        $py1 = /(exec|eval)\s*\(\s*(base64|zlib|marshal|codecs|binascii)\.(b64decode|b32decode|b16decode|decodebytes|decompress|loads|decode|unhexlify|a2b_base64)\s*\(/
        $py2 = /(exec|eval)\s*\(\s*__import__\(\s*['"](base64|zlib|marshal|codecs|binascii)['"]\s*\)\.\w+\(/
        $py3 = /(exec|eval)\s*\(\s*compile\s*\(\s*(base64|zlib|marshal|codecs)\./
        $py4 = /(exec|eval)\s*\(\s*bytes\.fromhex\(/
        $sh1 = /\|\s*base64\s+(-d|--decode|-D)\s*\|\s*(ba)?sh\b/
        $sh2 = /base64\s+(-d|--decode)\s*<<<[^\n]{0,300}\|\s*(ba)?sh\b/
        $ps1 = /(powershell|pwsh)(\.exe)?\s[^\n]{0,60}-(e|enc|encodedcommand)\s+[A-Za-z0-9+\/=]{40,}/ nocase
    condition:
        any of them
}
