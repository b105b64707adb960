# A Terraform stack that needs no provider download: only built-in resources.
variable "greeting" {
  type    = string
  default = "hello from runyard"
}

resource "terraform_data" "greeting" {
  input = var.greeting
}

# Replaced on every apply, so each run has something to do.
resource "terraform_data" "stamp" {
  triggers_replace = [timestamp()]
}

output "greeting" {
  value = terraform_data.greeting.output
}

output "greeting_secret" {
  value     = "sensitive ${var.greeting}"
  sensitive = true
}
