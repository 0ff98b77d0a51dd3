"""The diagnosis wing: what diagnose reads (probes, evidence) and concludes (rules, findings).

Pure: it reads the cluster only through the ports' reader Protocols and never changes anything.
"""
