# muhurat as a Nomad service job. One instance per database: a second one
# refuses to start (SQLite file lock / PostgreSQL advisory lock), so keep
# count = 1 and let Nomad restart it.
job "muhurat" {
  datacenters = ["dc1"]
  type        = "service"

  group "muhurat" {
    count = 1

    network {
      port "http" { static = 7878 }
    }

    task "server" {
      driver = "exec"

      config {
        command = "/usr/local/bin/muhurat"
        args    = ["server", "--config", "local/muhurat.yaml"]
      }

      # Secrets from Vault/Nomad variables become the variables the policy
      # binds them to (policy.secrets.NAME: {env: VAR, hosts: [...]}).
      template {
        destination = "secrets/env"
        env         = true
        data        = <<EOT
MUHURAT_DB={{ with nomadVar "nomad/jobs/muhurat" }}{{ .db_url }}{{ end }}
MATTERMOST_DEPLOYS_URL={{ with nomadVar "nomad/jobs/muhurat" }}{{ .mattermost_webhook }}{{ end }}
EOT
      }

      template {
        destination = "local/muhurat.yaml"
        data        = <<EOT
listen: 0.0.0.0:7878
calendars: /etc/muhurat/calendars
drift_interval: 10s
max_clock_skew: 5s
EOT
      }

      service {
        name = "muhurat"
        port = "http"
        check {
          type     = "http"
          path     = "/readyz"
          interval = "10s"
          timeout  = "2s"
        }
      }

      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }
}
