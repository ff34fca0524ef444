package daemon

import (
	"net/http"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/vm"
)

func (s *Server) kernelList(w http.ResponseWriter, r *http.Request) error {
	ks, err := s.Images.Kernels(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, ks)
	return nil
}

func (s *Server) kernelShow(w http.ResponseWriter, r *http.Request) error {
	k, err := s.Images.Kernel(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, k)
	return nil
}

func (s *Server) kernelImport(w http.ResponseWriter, r *http.Request) error {
	var p api.KernelImportParams
	if err := decode(r, &p); err != nil {
		return err
	}
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		return s.Images.ImportKernel(r.Context(), p, image.Progress(progress))
	})
}

func (s *Server) kernelDelete(w http.ResponseWriter, r *http.Request) error {
	if err := s.Images.DeleteKernel(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

func (s *Server) imageList(w http.ResponseWriter, r *http.Request) error {
	imgs, err := s.Images.Images(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, imgs)
	return nil
}

func (s *Server) imageShow(w http.ResponseWriter, r *http.Request) error {
	img, err := s.Images.Image(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, img)
	return nil
}

func (s *Server) imageBuild(w http.ResponseWriter, r *http.Request) error {
	var p api.ImageBuildParams
	if err := decode(r, &p); err != nil {
		return err
	}
	return s.stream(w, r, func(progress vm.Progress) (any, error) {
		return s.Images.Build(r.Context(), p, image.Progress(progress))
	})
}

func (s *Server) imageRegister(w http.ResponseWriter, r *http.Request) error {
	var p api.ImageRegisterParams
	if err := decode(r, &p); err != nil {
		return err
	}
	img, err := s.Images.Register(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, img)
	return nil
}

func (s *Server) imageDelete(w http.ResponseWriter, r *http.Request) error {
	if err := s.Images.DeleteImage(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}
