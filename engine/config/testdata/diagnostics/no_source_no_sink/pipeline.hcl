pipeline {
  name = "empty"
}

filter "orphan" {
  inputs = [source.calls]
  where  = "text != ''"
}
